// Dtype codes (as pydeepbench/_native.py numbers them) and scalar bf16 <-> fp32
// conversions, shared by the kernels and the bindings; the bindings' operand view is
// bindings/tensor_arg.h. No torch headers: the extension does not link libtorch.
#pragma once
#include <cstdint>

namespace pdb {

// u8: only as 8-bit rowwise-quantized embedding rows (see cpu/embedding_bag.h).
enum class DType : int { f32 = 0, bf16 = 1, f16 = 2, i32 = 3, i64 = 4, u8 = 5 };

inline int dtype_size(DType t) {
  switch (t) {
    case DType::f32: return 4;
    case DType::bf16: return 2;
    case DType::f16: return 2;
    case DType::i32: return 4;
    case DType::i64: return 8;
    case DType::u8: return 1;
  }
  return 0;
}

inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "float32";
    case DType::bf16: return "bfloat16";
    case DType::f16: return "float16";
    case DType::i32: return "int32";
    case DType::i64: return "int64";
    case DType::u8: return "uint8";
  }
  return "?";
}

// bf16 <-> fp32 (round to nearest even; NaN kept quiet). `static`: translation units built
// with different ISA flags each keep their own copy, so the linker cannot hand an AVX-512
// compiled instance to the portable path.
static inline float bf16_to_f32(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  __builtin_memcpy(&f, &u, 4);
  return f;
}
static inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  __builtin_memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

}  // namespace pdb
