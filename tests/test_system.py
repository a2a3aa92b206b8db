import os
import re
import shutil
import subprocess
import sys

import pytest

from pydeepbench import _native, system

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def git(where, *args) -> str:
    return subprocess.run(
        ["git", "-C", str(where), "-c", "user.name=t", "-c", "user.email=t@t", *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def repo_with(tmp_path, name, files):
    """A git repository at tmp_path/name with `files` (relative paths) committed."""
    root = tmp_path / name
    root.mkdir()
    git(root, "init", "-q")
    for f in files:
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        (root / f).write_text("")
    git(root, "add", *files)
    git(root, "commit", "-q", "-m", "x")
    return root


def test_metadata_has_what_a_comparison_needs():
    s = system.collect()
    assert s["cpu"]["model"] and s["cpu"]["logical_cpus"] >= 1
    assert s["cpu"]["isa"] in _native.ISA_CAPS
    assert s["versions"]["python"] and s["versions"]["torch"] and s["versions"]["pydeepbench"]
    assert s["versions"]["compiler"]
    assert "machine" in s and "os" in s
    assert isinstance(system.machine_id(s), str)


def test_gpu_telemetry_reports_why_when_unavailable():
    t = system.gpu_telemetry()
    assert t["available"] or t["reason"]


def test_gpu_memory_counts_torchs_cached_blocks_as_free(monkeypatch):
    gib = 2**30
    monkeypatch.setattr(system, "_host_available_bytes", lambda: 100 * gib)
    monkeypatch.setattr(system.torch.cuda, "mem_get_info", lambda dev: (3 * gib, 80 * gib))
    monkeypatch.setattr(system.torch.cuda, "memory_reserved", lambda dev: 5 * gib)
    monkeypatch.setattr(system.torch.cuda, "memory_allocated", lambda dev: 4 * gib)
    assert system.available_memory_bytes("cpu") == 100 * gib
    assert system.available_memory_bytes("cuda") == 4 * gib
    assert system.available_memory_bytes("cuda:1") == 4 * gib


def test_unknown_isa_cap_is_refused_by_name():
    """A misspelled PYDEEPBENCH_ISA must not silently run the kernels uncapped."""
    code = "from pydeepbench import _native; _native.cpu()"
    env = dict(os.environ, PYDEEPBENCH_ISA="avx-512")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert r.returncode != 0
    assert "PYDEEPBENCH_ISA='avx-512' is not one of generic, avx2" in r.stderr


@pytest.mark.parametrize("value", ["abc", "-5", "１２", str(2**44)])
def test_a_bad_host_pool_size_is_refused_by_name(value):
    """The pool read it with strtoull: "abc" became 0 MiB and "-5" a huge limit."""
    code = "from pydeepbench import _native; _native.cpu()"
    env = dict(os.environ, PYDEEPBENCH_HOST_POOL_MB=value)
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert r.returncode != 0
    assert f"PYDEEPBENCH_HOST_POOL_MB='{value}' is not a number of MiB" in r.stderr


@needs_git
def test_git_commit_is_the_running_source_not_the_working_directory(tmp_path, monkeypatch):
    other = repo_with(tmp_path, "unrelated", ["README"])
    monkeypatch.chdir(other)
    commit = system._git_commit()
    assert commit != git(other, "rev-parse", "HEAD")
    # This checkout's HEAD when the package runs from one (editable), else None.
    tracked = subprocess.run(
        ["git", "-C", str(system.PACKAGE_DIR), "ls-files", "--error-unmatch", "__init__.py"],
        capture_output=True,
    )
    if tracked.returncode == 0:
        assert commit.removesuffix("-dirty") == git(system.PACKAGE_DIR, "rev-parse", "HEAD")
        assert system.collect()["git_commit"] == commit
        built = system.collect()["versions"]["build_commit"]
        assert built is None or re.fullmatch(r"[0-9a-f]{40}(-dirty)?", built)
    else:  # an installed copy: the commit its extension was built from, if any
        assert commit is None
        built = _native.cpu().build_commit
        assert re.fullmatch(r"([0-9a-f]{40}(-dirty)?)?", built)
        assert system.collect()["git_commit"] == (built or None)
        assert system.collect()["versions"]["build_commit"] == (built or None)


@needs_git
def test_git_commit_of_a_package_tracked_installed_or_without_git(tmp_path, monkeypatch):
    src = repo_with(tmp_path, "src", ["pkg/__init__.py"])
    head = git(src, "rev-parse", "HEAD")
    assert system._git_commit(src / "pkg", built="stale") == head
    (src / "pkg" / "__init__.py").write_text("x = 1\n")
    assert system._git_commit(src / "pkg") == head + "-dirty"
    git(src, "checkout", "pkg/__init__.py")
    # Installed outside any repository, or in a project's (untracked) venv: not its source;
    # the commit the extension was built from, when it was built from a checkout.
    (tmp_path / "site" / "pkg").mkdir(parents=True)
    assert system._git_commit(tmp_path / "site" / "pkg") is None
    assert system._git_commit(tmp_path / "site" / "pkg", built=head) == head
    venv_pkg = src / ".venv" / "site-packages" / "pkg"
    venv_pkg.mkdir(parents=True)
    (venv_pkg / "__init__.py").write_text("")
    assert system._git_commit(venv_pkg) is None
    monkeypatch.setenv("PATH", str(tmp_path / "site"))  # no git to run
    assert system._git_commit(src / "pkg") is None
