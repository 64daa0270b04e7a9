"""Memory primitives for numba kernels that share memory between processes.

numba has no CPU atomics, so the ordered loads and stores are llvmlite intrinsics (cacheable, unlike
ctypes function pointers). All addresses are ``intp`` (``arr.ctypes.data + offset``) and must be
naturally aligned. Every value comes back as int64: numba silently turns uint64 mixed with int64 into
float64, which would break index arithmetic.

Plain ``ld_*``/``st_*`` are ordinary aligned accesses (for fields only one side writes, or that an
acquire load already ordered). ``*_acq``/``*_rel`` are the release/acquire pair that publishes ring
indices; ``xchg_u32`` and ``fence_sc`` are sequentially consistent (the StoreLoad order the doorbell
protocol needs). ``memcpy``, ``c_write`` and ``c_syscall`` are libc's, resolved by name.

With ``NUMBA_DISABLE_JIT=1`` the same names are plain Python over ctypes, so kernels built on them
run (slowly) as Python: x86-64 is TSO and CPython does not reorder across these calls.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any, cast

import numba
from numba import types

__all__ = [
    "cas_i64",
    "c_write",
    "fence_sc",
    "fetch_add_i64",
    "fetch_add_u32",
    "c_syscall",
    "ld_acq_i64",
    "ld_acq_u32",
    "ld_i64",
    "ld_u32",
    "memcpy",
    "st_i64",
    "st_rel_i64",
    "st_rel_u32",
    "st_u32",
    "xchg_u32",
]

if getattr(numba.config, "DISABLE_JIT", False):  # pragma: no cover - exercised by the NUMBA_DISABLE_JIT test run

    def ld_i64(addr: int) -> int:
        return ctypes.c_int64.from_address(addr).value

    def st_i64(addr: int, val: int) -> None:
        ctypes.c_int64.from_address(addr).value = val

    def ld_u32(addr: int) -> int:
        return ctypes.c_uint32.from_address(addr).value

    def st_u32(addr: int, val: int) -> None:
        ctypes.c_uint32.from_address(addr).value = val & 0xFFFFFFFF

    ld_acq_i64 = ld_i64
    st_rel_i64 = st_i64
    ld_acq_u32 = ld_u32
    st_rel_u32 = st_u32

    def xchg_u32(addr: int, val: int) -> int:
        cell = ctypes.c_uint32.from_address(addr)
        old = cell.value
        cell.value = val & 0xFFFFFFFF
        return old

    def fetch_add_i64(addr: int, val: int) -> int:
        cell = ctypes.c_int64.from_address(addr)
        old = cell.value
        cell.value = old + val
        return old

    def fetch_add_u32(addr: int, val: int) -> int:
        cell = ctypes.c_uint32.from_address(addr)
        old = cell.value
        cell.value = (old + val) & 0xFFFFFFFF
        return old

    _libc = ctypes.CDLL(None, use_errno=True)

    def c_syscall(nr: int, a1: int, a2: int, a3: int, a4: int, a5: int, a6: int) -> int:
        args = [ctypes.c_long(v) for v in (nr, a1, a2, a3, a4, a5, a6)]
        return int(_libc.syscall(*args))

    def cas_i64(addr: int, expected: int, desired: int) -> int:
        cell = ctypes.c_int64.from_address(addr)
        old = cell.value
        if old == expected:
            cell.value = desired
        return old

    def fence_sc() -> None:
        return None

    def memcpy(dst: int, src: int, n: int) -> int:
        ctypes.memmove(dst, src, n)
        return dst

    def c_write(fd: int, addr: int, n: int) -> int:
        try:
            return os.write(fd, ctypes.string_at(addr, n))
        except OSError as exc:
            return -(exc.errno or 1)

else:
    from llvmlite import ir
    from numba.core.extending import intrinsic

    _I64 = ir.IntType(64)
    _I32 = ir.IntType(32)

    def _ptr(builder: Any, addr: Any, bits: int) -> Any:
        return builder.inttoptr(addr, ir.IntType(bits).as_pointer())

    def _load(bits: int, ordering: str | None) -> Any:
        def impl(typingctx: Any, addr: Any) -> Any:
            def codegen(ctx: Any, builder: Any, sig: Any, args: Any) -> Any:
                ptr = _ptr(builder, args[0], bits)
                if ordering is None:
                    val = builder.load(ptr, align=bits // 8)
                else:
                    val = builder.load_atomic(ptr, ordering, bits // 8)
                return builder.zext(val, _I64) if bits < 64 else val

            return types.int64(types.intp), codegen

        return intrinsic(impl)

    def _store(bits: int, ordering: str | None) -> Any:
        def impl(typingctx: Any, addr: Any, val: Any) -> Any:
            def codegen(ctx: Any, builder: Any, sig: Any, args: Any) -> Any:
                v = ctx.cast(builder, args[1], sig.args[1], types.int64)
                if bits < 64:
                    v = builder.trunc(v, ir.IntType(bits))
                ptr = _ptr(builder, args[0], bits)
                if ordering is None:
                    builder.store(v, ptr, align=bits // 8)
                else:
                    builder.store_atomic(v, ptr, ordering, bits // 8)
                return ctx.get_dummy_value()

            return types.void(types.intp, val), codegen

        return intrinsic(impl)

    ld_i64 = _load(64, None)
    ld_u32 = _load(32, None)
    ld_acq_i64 = _load(64, "acquire")
    ld_acq_u32 = _load(32, "acquire")
    st_i64 = _store(64, None)
    st_u32 = _store(32, None)
    st_rel_i64 = _store(64, "release")
    st_rel_u32 = _store(32, "release")

    @intrinsic
    def xchg_u32(typingctx: Any, addr: Any, val: Any) -> Any:
        def codegen(ctx: Any, builder: Any, sig: Any, args: Any) -> Any:
            v = builder.trunc(ctx.cast(builder, args[1], sig.args[1], types.int64), _I32)
            old = builder.atomic_rmw("xchg", _ptr(builder, args[0], 32), v, "seq_cst")
            return builder.zext(old, _I64)

        return types.int64(types.intp, val), codegen

    @intrinsic
    def fetch_add_i64(typingctx: Any, addr: Any, val: Any) -> Any:
        def codegen(ctx: Any, builder: Any, sig: Any, args: Any) -> Any:
            v = ctx.cast(builder, args[1], sig.args[1], types.int64)
            return builder.atomic_rmw("add", _ptr(builder, args[0], 64), v, "seq_cst")

        return types.int64(types.intp, val), codegen

    @intrinsic
    def fetch_add_u32(typingctx: Any, addr: Any, val: Any) -> Any:
        def codegen(ctx: Any, builder: Any, sig: Any, args: Any) -> Any:
            v = builder.trunc(ctx.cast(builder, args[1], sig.args[1], types.int64), _I32)
            old = builder.atomic_rmw("add", _ptr(builder, args[0], 32), v, "seq_cst")
            return builder.zext(old, _I64)

        return types.int64(types.intp, val), codegen

    @intrinsic
    def cas_i64(typingctx: Any, addr: Any, expected: Any, desired: Any) -> Any:
        def codegen(ctx: Any, builder: Any, sig: Any, args: Any) -> Any:
            e = ctx.cast(builder, args[1], sig.args[1], types.int64)
            d = ctx.cast(builder, args[2], sig.args[2], types.int64)
            pair = builder.cmpxchg(_ptr(builder, args[0], 64), e, d, "seq_cst", "seq_cst")
            return builder.extract_value(pair, 0)

        return types.int64(types.intp, expected, desired), codegen

    @intrinsic
    def fence_sc(typingctx: Any) -> Any:
        def codegen(ctx: Any, builder: Any, sig: Any, args: Any) -> Any:
            builder.fence("seq_cst")
            return ctx.get_dummy_value()

        return types.void(), codegen

    # libc memcpy resolved by name from the already-loaded C library; intp in, intp out
    memcpy = cast(Any, types.ExternalFunction("memcpy", types.intp(types.intp, types.intp, types.intp)))
    # libc write(2): a kernel rings an eventfd without returning to Python
    c_write = cast(Any, types.ExternalFunction("write", types.intp(types.int32, types.intp, types.intp)))
    # libc syscall(2) with six arguments (futex); no float arguments, so the variadic ABI is not an issue
    _I = types.intp
    c_syscall = cast(Any, types.ExternalFunction("syscall", _I(_I, _I, _I, _I, _I, _I, _I)))
