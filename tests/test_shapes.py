import re

import pytest

from pydeepbench import registry, shapes

EXPECTED_COUNTS = {  # DeepBench set sizes from gemm_problems.h
    "deepbench-train": 160,
    "deepbench-infer-server": 75,
    "deepbench-infer-device": 13,
    "fambench-mlp_A": 12,
}


@pytest.mark.parametrize("name", sorted(shapes.builtin_sets()))
def test_builtin_sets_load_with_source_and_unique_cases(name):
    s = shapes.load(name)
    assert s.source and s.version >= 1 and s.cases
    spec = registry.get_op(s.op)
    keys = [repr(sorted(c.shape.items())) for c in s.cases]
    if name.startswith("deepbench"):
        assert len(s.cases) == EXPECTED_COUNTS[name]
    else:
        assert len(set(keys)) == len(keys), "duplicate cases"
    assert all(spec.flops(c.shape) > 0 for c in s.cases)
    assert len({c.seed for c in s.cases}) == len(s.cases)


def test_counts_of_fambench_and_dlrm():
    assert len(shapes.load("fambench-mlp_A").cases) == 12
    dlrm = {c.name: c.shape for c in shapes.load("dlrm").cases}
    # Kaggle's first top layer: 16 + C(27, 2) = 367 inputs at batch 128.
    top0 = next(s for n, s in dlrm.items() if "kaggle.top0" in n)
    assert (top0["M"], top0["K"], top0["N"], top0["b_t"]) == (128, 367, 512, True)


def test_deepbench_train_layout_mix():
    cases = shapes.load("deepbench-train").cases
    lay = [("T" if c.shape["a_t"] else "N") + ("T" if c.shape["b_t"] else "N") for c in cases]
    # 146 problems come as NN+TN pairs, 6 are NT only, 8 are NN+NT pairs (gemm_problems.h).
    assert (lay.count("NN"), lay.count("TN"), lay.count("NT")) == (73 + 4, 73, 6 + 4)


@pytest.mark.parametrize(
    "name", ["deepbench-train", "deepbench-infer-server", "deepbench-infer-device"]
)
def test_deepbench_sets_run_as_cublas_column_major_problems(name):
    s = shapes.load(name)
    assert s.version >= 2 and all(c.shape["col_major"] for c in s.cases)


def test_unknown_set_and_bad_files(tmp_path):
    with pytest.raises(ValueError, match="unknown shape set 'nope'"):
        shapes.load("nope")
    f = tmp_path / "bad.toml"
    f.write_text(
        'schema = "pydeepbench.shapes/1"\nname="x"\nop="gemm"\nversion=1\n'
        'source="test"\ncases=[{M=1, N=2}]\n'
    )
    with pytest.raises(ValueError, match="needs field 'K'"):
        shapes.load(str(f))
    f.write_text(f.read_text().replace("N=2}", "N=-2, K=1}"))
    with pytest.raises(ValueError, match="'N' must be >= 1"):
        shapes.load(str(f))
    f.write_text('schema = "pydeepbench.shapes/1"\nname="x"\nop="gemm"\nversion=1\ncases=[]\n')
    with pytest.raises(ValueError, match="missing field 'source'"):
        shapes.load(str(f))
    head = 'schema = "pydeepbench.shapes/1"\nname="x"\nop="gemm"\nversion=1\nsource="t"\n'
    f.write_text(head + "cases=[]\n")  # would run nothing and exit 0
    with pytest.raises(ValueError, match="the set has no cases"):
        shapes.load(str(f))
    f.write_text(head + "cases=[{M=1, N=2, K=3}, {M=1, N=2, K=3, b_t=false}]\n")
    with pytest.raises(ValueError, match="case names repeat: M=1"):  # one key in reports
        shapes.load(str(f))


@pytest.mark.parametrize(
    "body, said",
    [
        # tracebacks (TypeError) or messages naming neither the file nor the field
        ("cases = 5\n", "cases must be a list of tables"),
        ("cases = [1, 2]\n", "cases must be a list of tables"),
        ("cases = [{name = 5, M = 1, N = 1, K = 1}]\n", "case 0: name must be a string, got 5"),
        ('seed = "abc"\ncases = [{M = 1, N = 1, K = 1}]\n', "seed must be an integer"),
        ("seed = 1.5\ncases = [{M = 1, N = 1, K = 1}]\n", "seed must be an integer, got 1.5"),
        ("seed = true\ncases = [{M = 1, N = 1, K = 1}]\n", "seed must be an integer, got True"),
    ],
)
def test_malformed_files_name_the_file_and_the_field(tmp_path, body, said):
    f = tmp_path / "bad.toml"
    f.write_text(
        'schema = "pydeepbench.shapes/1"\nname="x"\nop="gemm"\nversion=1\nsource="t"\n' + body
    )
    with pytest.raises(ValueError, match=f"{f.name}: .*{re.escape(said)}"):
        shapes.load(str(f))


def test_a_version_that_is_not_an_integer_and_bad_utf8_are_named(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text(
        'schema = "pydeepbench.shapes/1"\nname="x"\nop="gemm"\nversion="v1"\nsource="t"\ncases=[]\n'
    )
    with pytest.raises(ValueError, match="bad.toml: version must be an integer, got 'v1'"):
        shapes.load(str(f))
    f.write_bytes(b'schema = "\xff"\n')
    with pytest.raises(ValueError, match="bad.toml: not valid TOML"):
        shapes.load(str(f))


def test_wrong_op_is_refused():
    with pytest.raises(ValueError, match="for op 'gemm', not 'embedding_bags'"):
        shapes.load("dlrm", op="embedding_bags")


def test_training_op_reads_its_forward_ops_sets():
    s = shapes.load("dlrm-dcnv2", op="embedding_bags_train")
    assert s.op == "embedding_bags" and s.cases[0].shape["pooling"][20] == 100


def test_parse_shape_takes_lists_in_brackets():
    c = shapes.parse_shape(
        "tables=2, rows=[5000, 300],dim=8,batch=4,pooling=[4,1]", "embedding_bags"
    )
    assert c.shape["rows"] == [5000, 300] and c.shape["pooling"] == [4, 1]
    assert c.shape["tables"] == 2 and c.shape["dim"] == 8
    with pytest.raises(ValueError, match="must be a list of ints"):
        shapes.parse_shape("tables=2,rows=[5000,x],dim=8,batch=4,pooling=[4,1]", "embedding_bags")
    with pytest.raises(ValueError, match="unbalanced brackets"):
        shapes.parse_shape("tables=2,rows=[5000,300,dim=8", "embedding_bags")


def test_parse_shape_takes_float_fields_and_names_what_differs_from_the_defaults():
    base = "tables=1,rows=[100],dim=8,batch=4,pooling=[2],distribution=zipf"
    c = shapes.parse_shape(base + ",alpha=1.2,mode=mean,index_dtype=int32", "embedding_bags")
    assert c.shape["alpha"] == 1.2 and c.shape["distribution"] == "zipf"
    assert c.name == "T=1,D=8,B=4,L=2,zipf,alpha=1.2,mean,int32"
    assert shapes.parse_shape(base + ",alpha=2", "embedding_bags").shape["alpha"] == 2
    assert shapes.parse_shape(base, "embedding_bags").name == "T=1,D=8,B=4,L=2,zipf"
    for bad in ("nan", "inf"):  # nan passed the ">= 0" test and sent every lookup to one row
        with pytest.raises(ValueError, match=f"'alpha' must be a finite number, got {bad}"):
            shapes.parse_shape(base + f",alpha={bad}", "embedding_bags")


def test_parse_shape():
    c = shapes.parse_shape("M=3, N=4, K=5, b_t=true", "gemm")
    assert c.shape == {"M": 3, "N": 4, "K": 5, "a_t": False, "b_t": True, "col_major": False}
    with pytest.raises(ValueError, match="unknown shape field"):
        shapes.parse_shape("M=3,N=4,K=5,Z=1", "gemm")
    with pytest.raises(ValueError, match="KEY=VALUE"):
        shapes.parse_shape("M3", "gemm")
