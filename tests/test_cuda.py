"""The CUDA recorder (Recorder(device="cuda")).

Two parts:
- host-side tests that run everywhere: what the extension reports, the
  error without a GPU, device strings, parsing of __cuda_array_interface__
  and DLPack, and the dispatch from Recorder.update to the native call
  (with a stand-in for the native device recorder);
- GPU parity tests, CPU vs GPU profiles on random inputs for every mode,
  dtype, storage (dense / sparse), with masks, ties, strides, NaN and bad
  ids. They skip, with the reason, where no usable CUDA device (or no CUDA
  build of torch) is present.

Tolerances (GPU): counts, frequencies and token counts exactly; sums are
float64 atomics in another order than the CPU's, so rtol 1e-12 with a small
atol for sums that cancel to about zero.
"""

from __future__ import annotations

import os
import shutil
import zlib

import numpy as np
import pytest
import reference

import txray
from txray import _device, _native
from txray._device import DeviceBackend
from txray.recorder import cuda_available

SIZES = {"token": 7, "pos": 3}


# -- host side: runs without a GPU ----------------------------------------------


def test_extension_reports_whether_cuda_was_compiled():
    assert isinstance(_native.has_cuda, bool)
    if shutil.which("nvcc") and os.environ.get("TXRAY_CUDA", "AUTO").upper() != "OFF":
        assert _native.has_cuda, "nvcc is on PATH but the extension was built without the CUDA kernels"
    assert isinstance(_native.cuda_device_count(), int)
    assert isinstance(_native.cuda_status(), str)
    assert cuda_available() == (_native.has_cuda and _native.cuda_device_count() > 0)
    if not cuda_available():
        assert _native.cuda_status() != ""


@pytest.mark.skipif(cuda_available(), reason="a CUDA device is usable here")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_recorder_without_a_gpu_raises_a_clear_error(device):
    with pytest.raises(RuntimeError, match="no usable CUDA device|built without CUDA"):
        txray.Recorder(4, SIZES, device=device)


def test_device_strings():
    assert txray.Recorder(3, SIZES).device == "cpu"
    assert txray.Recorder(3, SIZES, device="cpu").device == "cpu"
    for bad in ["gpu", "cuda:x", "cuda:-1", "tpu:0"]:
        with pytest.raises(ValueError, match="device must be"):
            txray.Recorder(3, SIZES, device=bad)


def test_stream_is_refused_on_the_cpu():
    rec = txray.Recorder(3, SIZES)
    with pytest.raises(ValueError, match="only used by CUDA recorders"):
        rec.update(np.ones((2, 3), np.float32), {"token": [0, 1], "pos": [0, 0]}, stream=7)
    rec.synchronize()  # a no-op on the CPU
    assert rec.tokens == 0


class FakeCAI:
    def __init__(self, **cai):
        self.__cuda_array_interface__ = cai


def test_cuda_array_interface_parsing():
    a = _device.device_array(FakeCAI(data=(4096, False), shape=(2, 3, 5), typestr="<f2", version=3, stream=1), "x")
    assert (a.ptr, a.shape, a.strides, a.dtype, a.stream) == (4096, (2, 3, 5), (15, 5, 1), "float16", 1)
    b = _device.device_array(
        FakeCAI(data=(8192, False), shape=(4, 6), typestr="<f4", strides=(4, 16), version=2, stream=99), "x"
    )
    assert b.strides == (1, 4) and b.stream is None  # streams are only read from version 3 on
    c = _device.device_array(FakeCAI(data=(16, True), shape=(7,), typestr="<i8", version=3), "x")
    assert (c.dtype, c.strides, c.stream) == ("int64", (1,), None)
    assert _device.device_array(FakeCAI(data=(16, True), shape=(7,), typestr="|b1", version=3), "x").dtype == "bool"
    with pytest.raises(TypeError, match="typestr"):
        _device.device_array(FakeCAI(data=(0, False), shape=(2,), typestr=">f4"), "x")
    with pytest.raises(TypeError, match="typestr"):
        _device.device_array(FakeCAI(data=(0, False), shape=(2,), typestr="<c8"), "x")
    with pytest.raises(ValueError, match="masked"):
        _device.device_array(FakeCAI(data=(0, False), shape=(2,), typestr="<f4", mask=object()), "x")
    with pytest.raises(ValueError, match="stream 0"):
        _device.device_array(FakeCAI(data=(0, False), shape=(2,), typestr="<f4", version=3, stream=0), "x")
    with pytest.raises(ValueError, match="multiples of the item size"):
        _device.device_array(FakeCAI(data=(0, False), shape=(2, 2), typestr="<f4", strides=(8, 2)), "x")
    with pytest.raises(TypeError, match="malformed"):
        _device.device_array(FakeCAI(shape=(2,), typestr="<f4"), "x")


def test_flattening_leading_axes():
    assert _device.collapse_rows((4, 9), (9 * 6, 6)) == 6  # contiguous (4, 9, 6)
    assert _device.collapse_rows((4, 9), (1, 4)) is None  # transposed batch and sequence
    assert _device.collapse_rows((4, 1, 9), (100, 3, 10)) is None
    assert _device.collapse_rows((4, 1, 9), (90, 7, 10)) == 10  # size-1 axes do not matter
    assert _device.collapse_rows((5,), (12,)) == 12
    assert _device.collapse_rows((1,), (3,)) == 3


def test_dlpack_capsules_are_read_without_being_consumed():
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    view = base[1:, ::2]
    info = _native.dlpack_info(view.__dlpack__())
    assert info["shape"] == (3, 3) and info["strides"] == (6, 2) and info["dtype"] == "float32"
    assert info["device_type"] == 1 and info["ptr"] == view.__array_interface__["data"][0]
    assert _native.dlpack_info(np.zeros(5, np.int64).__dlpack__())["dtype"] == "int64"
    assert _native.dlpack_info(np.zeros(5, np.bool_).__dlpack__())["dtype"] == "bool"
    capsule = base.__dlpack__()
    _native.dlpack_info(capsule)
    np.from_dlpack(type("P", (), {"__dlpack__": lambda s, **k: capsule, "__dlpack_device__": lambda s: (1, 0)})())
    with pytest.raises(ValueError, match="not an unconsumed DLPack capsule"):
        _native.dlpack_info(capsule)  # now consumed by NumPy

    class HostDLPack:  # a DLPack producer in host memory: the host path is used
        def __dlpack__(self, stream=None):
            return base.__dlpack__()

        def __dlpack_device__(self):
            return (1, 0)

    assert _device.device_array(HostDLPack(), "x") is None
    assert _device.device_array(base, "x") is None


def test_stream_handles():
    assert _device.stream_handle(None) is None and _device.stream_handle(5) == 5
    assert _device.stream_handle(type("S", (), {"cuda_stream": 123})()) == 123
    with pytest.raises(TypeError):
        _device.stream_handle("fast")


class FakeNativeDevice:
    """Stands in for _native.DeviceRecorder: records what update() passes;
    ``done`` is how many updates the "device" has finished."""

    def __init__(self):
        self.calls = []
        self.error = (0, -1, "")
        self.done = 0

    def update(self, *args):
        self.calls.append(args)
        return len(self.calls)

    def completed(self):
        return self.done

    def take_error(self):
        error, self.error = self.error, (0, -1, "")
        self.done = len(self.calls)
        return error

    tokens = 0


def with_backend(rec, native, device=0):
    """``rec`` recording through a DeviceBackend around the stand-in ``native``."""
    backend = DeviceBackend(device, rec.n_neurons, rec.features, rec.mode, rec.k or 1, 0, native=native)
    rec._device, rec._backend, rec._native = device, backend, native
    return rec


def fake_device_recorder(mode="max1", k=None):
    return with_backend(txray.Recorder(6, SIZES, mode=mode, k=k), FakeNativeDevice())


def test_update_dispatch_to_the_device_recorder():
    rec = fake_device_recorder()
    acts = FakeCAI(data=(1 << 20, False), shape=(4, 9, 6), typestr="<f2", version=3, stream=77)
    ids = FakeCAI(data=(1 << 21, False), shape=(4, 9), typestr="<i8", version=3)
    rec.update(acts, {"token": ids, "pos": np.zeros((4, 9), np.int32)}, mask=np.ones((4, 9), bool))
    ptr, rows, cols, row_stride, col_stride, dtype, mask, feats, stream = rec._native.calls[0]
    assert (ptr, rows, cols, row_stride, col_stride, dtype, stream) == (1 << 20, 36, 6, 6, 1, "float16", 77)
    assert feats[0] == 1 << 21  # device ids: a pointer
    assert feats[1].dtype == np.int64 and feats[1].shape == (36,)  # host ids: converted, copied by the extension
    assert mask.dtype == np.bool_ and mask.shape == (36,)
    # an explicit stream wins; a transposed (neurons, tokens) buffer is read with its strides
    acts_t = FakeCAI(data=(1 << 20, False), shape=(5, 6), typestr="<f4", strides=(4, 20), version=3)
    rec.update(acts_t, {"token": np.zeros(5, int), "pos": np.zeros(5, int)}, stream=5)
    assert rec._native.calls[1][3:5] == (1, 5) and rec._native.calls[1][-1] == 5
    assert rec._native.calls[1][6] is None
    assert rec._backend._leads == {1: (4, 9), 2: (5,)}


def test_inputs_in_flight_are_released_as_the_device_finishes():
    # a loop that never synchronises keeps only the inputs of unfinished updates alive
    rec = fake_device_recorder()
    native = rec._native
    acts = FakeCAI(data=(1 << 20, False), shape=(3, 6), typestr="<f4", version=3)
    feats = {k: np.zeros(3, int) for k in SIZES}
    most = 0
    for i in range(200):
        native.done = max(0, i - 2)  # the device runs three updates behind
        rec.update(acts, feats)
        most = max(most, rec._backend.inflight)
    assert len(native.calls) == 200 and most <= 4
    rec.synchronize()
    assert rec._backend.inflight == 0


def test_kernels_wait_for_the_streams_that_produced_their_inputs(monkeypatch):
    orders = []
    monkeypatch.setattr(
        _native, "cuda_order_after", lambda consumer, producer: orders.append((consumer, producer)), raising=False
    )
    rec = fake_device_recorder()
    feats = {k: np.zeros(3, int) for k in SIZES}
    on_77 = FakeCAI(data=(1 << 20, False), shape=(3, 6), typestr="<f4", version=3, stream=77)
    rec.update(on_77, feats)  # runs on the producer's stream: nothing to wait for
    assert rec._native.calls[-1][-1] == 77 and orders == []
    rec.update(on_77, feats, stream=5)  # an explicit stream waits for the producer's
    assert rec._native.calls[-1][-1] == 5 and orders == [(5, 77)]
    unnamed = FakeCAI(data=(1 << 20, False), shape=(3, 6), typestr="<f4", version=2, stream=77)
    rec.update(unnamed, feats)  # before version 3 the key means nothing: the legacy default stream
    assert rec._native.calls[-1][-1] == _device.LEGACY_STREAM and orders == [(5, 77)]


def test_dlpack_is_never_asked_for_stream_0(monkeypatch):
    asked = []

    class Producer:
        def __dlpack__(self, stream=None):
            asked.append(stream)
            raise RuntimeError("stop here")

        def __dlpack_device__(self):
            return (2, 0)

    for stream in (None, 0, 9):
        with pytest.raises(RuntimeError, match="stop here"):
            _device.device_array(Producer(), "x", stream)
    assert asked == [1, 1, 9]


def test_size_one_ids_with_other_strides_do_not_recurse(monkeypatch):
    torch = pytest.importorskip("torch")
    # input_ids[:, -1:] at batch 1: shape (1, 1), strides (S, 1), which torch calls contiguous,
    # so .contiguous() returned it unchanged and the conversion recursed until RecursionError.
    # A stand-in makes CPU tensors look like device arrays, so this runs without a GPU.
    real = _device.device_array

    def as_device(x, what, stream=None):
        if isinstance(x, torch.Tensor):
            dtype = str(x.dtype).replace("torch.", "")
            return _device.DeviceArray(x.data_ptr(), x.shape, x.stride(), dtype, device=0, keep=x)
        return real(x, what, stream)

    monkeypatch.setattr(_device, "device_array", as_device)
    ids = torch.arange(5).reshape(1, 5)[:, -1:]
    assert ids.shape == (1, 1) and ids.stride() == (5, 1) and ids.is_contiguous()
    ptr, held = _device.device_ids(ids, "token", (1, 1), None)
    assert ptr == ids.data_ptr() and held.shape == (1, 1)
    wide = torch.arange(10, dtype=torch.int32).reshape(2, 5)[:, ::2]  # converted once, to int64
    ptr, held = _device.device_ids(wide, "token", (2, 3), None)
    assert held.dtype == "int64" and _device.is_contiguous(held.shape, held.strides)
    mask = torch.ones(1, 5, dtype=torch.int8)[:, -1:]
    ptr, held = _device.device_mask(mask, (1, 1), None)
    assert held.dtype == "bool"
    assert _device.is_contiguous((1, 1), (5, 1)) and not _device.is_contiguous((2, 3), (5, 2))


def test_engine_errors_carry_the_token_as_data():
    native = _native.Recorder(2, ["token"], [3], "max1", 1, 1 << 20)
    acts = np.ones((4, 2), np.float32)
    with pytest.raises(_native.InputError) as err:
        native.update(acts, "float32", None, [np.array([0, 1, 5, 9], np.int64)])
    assert (
        err.value.token == 2 and err.value.template == "feature 'token' of {token} is 5, outside its vocabulary [0, 3)"
    )
    assert str(err.value) == "feature 'token' of token 2 is 5, outside its vocabulary [0, 3)"
    acts[3, 1] = np.nan
    with pytest.raises(_native.InputError) as err:
        native.update(acts, "float32", None, [np.zeros(4, np.int64)])
    assert err.value.token == 3 and "{token} at neuron 1 is NaN" in err.value.template
    with pytest.raises(_native.InputError) as err:
        native.update(acts[:, :1], "float32", None, [np.zeros(4, np.int64)])
    assert err.value.token == -1
    rec = txray.Recorder(2, {"token": 3})
    with pytest.raises(ValueError, match=r"feature 'token' of token 5 \(axis 0: 1, axis 1: 2\) is 7"):
        rec.update(np.ones((2, 3, 2), np.float32), {"token": [[0, 0, 0], [0, 0, 7]]})


def test_device_update_argument_errors():
    rec = fake_device_recorder()
    acts = FakeCAI(data=(1 << 20, False), shape=(3, 6), typestr="<f4", version=3)
    ok = {"token": np.zeros(3, int), "pos": np.zeros(3, int)}
    cases = [
        (ValueError, "host memory", lambda: rec.update(np.zeros((3, 6), np.float32), ok)),
        (TypeError, "float64", lambda: rec.update(FakeCAI(data=(8, 0), shape=(3, 6), typestr="<f8"), ok)),
        (ValueError, "5 neurons", lambda: rec.update(FakeCAI(data=(8, 0), shape=(3, 5), typestr="<f4"), ok)),
        (
            ValueError,
            "without a copy",
            lambda: rec.update(
                FakeCAI(data=(8, 0), shape=(3, 2, 6), typestr="<f4", strides=(24, 72, 4)),
                {k: np.zeros((3, 2), int) for k in SIZES},
            ),
        ),
        (ValueError, "missing \\['pos'\\]", lambda: rec.update(acts, {"token": ok["token"]})),
        (TypeError, "must be integers", lambda: rec.update(acts, {**ok, "pos": np.zeros(3)})),
        (
            TypeError,
            "contiguous int64",
            lambda: rec.update(acts, {**ok, "pos": FakeCAI(data=(8, 0), shape=(3,), typestr="<i4")}),
        ),
        (
            ValueError,
            "has shape \\(4,\\)",
            lambda: rec.update(acts, {**ok, "pos": FakeCAI(data=(8, 0), shape=(4,), typestr="<i8")}),
        ),
        (
            TypeError,
            "contiguous bool or uint8",
            lambda: rec.update(acts, ok, mask=FakeCAI(data=(8, 0), shape=(3,), typestr="<i4")),
        ),
        (ValueError, "mask has shape", lambda: rec.update(acts, ok, mask=[True])),
    ]
    for error, message, call in cases:
        with pytest.raises(error, match=message):
            call()
    assert rec._native.calls == []


def test_device_errors_are_raised_at_the_next_synchronisation_point():
    rec = fake_device_recorder()
    acts = FakeCAI(data=(1 << 20, False), shape=(2, 3, 6), typestr="<f4", version=3)
    feats = {k: np.zeros((2, 3), int) for k in SIZES}
    for _ in range(3):
        rec.update(acts, feats)
    rec._native.error = (2, 5, "activation of {token} at neuron 3 is NaN; activations must be finite")
    with pytest.raises(
        ValueError,
        match=r"update 2: activation of token 5 \(axis 0: 1, axis 1: 2\) at neuron 3 "
        r"is NaN; activations must be finite. Nothing of that update or of "
        r"the 1 after it was recorded",
    ):
        rec.synchronize()
    rec.synchronize()  # taken: raised once
    assert rec._backend._leads == {} and rec._backend.inflight == 0


def _device_topk_rule(row, k):
    """What select_kernel computes: round j takes the first entry, in
    (value desc, index asc) order, that comes after the previous winner."""
    out, prev = [], None
    for _ in range(k):
        best = None
        for i, x in enumerate(row):
            if prev is not None and not (x < prev[0] or (x == prev[0] and i > prev[1])):
                continue
            if best is None or x > best[0] or (x == best[0] and i < best[1]):
                best = (x, i)
        out.append(best[1])
        prev = best
    return out


def test_the_device_topk_rule_equals_the_reference():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 12))
        row = rng.integers(-2, 3, n).astype(np.float32)
        row[rng.random(n) < 0.2] = -0.0
        k = int(rng.integers(1, n + 1))
        assert _device_topk_rule(row, k) == list(reference.winners(row, "topk", k))


def test_error_keys_order_errors_as_the_cpu_checks_them():
    # the keys of cpp/cuda/errors.cuh: ids (token, then kind) before non-finite values (token, then neuron)
    def id_key(kind, row):
        return (row << 8) | kind

    def nan_key(row, neuron):
        return (1 << 63) | (row << 32) | neuron

    keys = [nan_key(0, 0), id_key(1, 0), id_key(0, 5), nan_key(3, 1), nan_key(2, 9), id_key(0, 0)]
    assert sorted(keys) == [id_key(0, 0), id_key(1, 0), id_key(0, 5), nan_key(0, 0), nan_key(2, 9), nan_key(3, 1)]
    assert id_key(15, 2**31 - 1) < nan_key(0, 0)
    assert nan_key(2**31 - 1, 2**31 - 1) < 2**64 - 1  # never the "no error" value


# -- GPU parity: needs a CUDA device and a CUDA build of torch ------------------

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None


def _gpu_skip_reason():
    if torch is None:
        return "torch is not installed"
    if not _native.has_cuda:
        return "txray was built without the CUDA kernels"
    if _native.cuda_device_count() == 0:
        return f"no usable CUDA device ({_native.cuda_status()})"
    if not torch.cuda.is_available():
        return "torch has no CUDA (the GPU tests feed torch CUDA tensors)"
    return None


gpu = pytest.mark.skipif(_gpu_skip_reason() is not None, reason=f"GPU test: {_gpu_skip_reason()}")

MODES = [("max1", None), ("topk", 1), ("topk", 3), ("topk", 17), ("all", None)]
DTYPES = ["float32", "float16", "bfloat16"]


def _pair(n, sizes, mode, k, dense):
    limit = 1 << 30 if dense else 0
    cpu = txray.Recorder(n, sizes, mode=mode, k=k, dense_limit_bytes=limit)
    dev = txray.Recorder(n, sizes, mode=mode, k=k, dense_limit_bytes=limit, device="cuda")
    return cpu, dev


def _assert_same_profile(a, b):
    assert a.tokens == b.tokens
    np.testing.assert_allclose(b.mass(), a.mass(), rtol=1e-12, atol=1e-9)
    for kind in a.kinds:
        ta, tb = a.table(kind), b.table(kind)
        assert ta.column("neuron").equals(tb.column("neuron"))
        assert ta.column("feature").equals(tb.column("feature"))
        assert ta.column("count").equals(tb.column("count"))
        np.testing.assert_allclose(tb.column("sum").to_numpy(), ta.column("sum").to_numpy(), rtol=1e-12, atol=1e-9)
        np.testing.assert_array_equal(a.frequencies(kind), b.frequencies(kind))


def _acts(rng, shape, dtype, ties=False):
    x = rng.integers(-3, 3, size=shape) if ties else rng.standard_normal(shape)
    return torch.from_numpy(x.astype(np.float32)).to(getattr(torch, dtype))


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode,k", MODES)
@pytest.mark.parametrize("dense", [True, False])
@pytest.mark.parametrize("ties", [False, True])
def test_gpu_matches_cpu(dtype, mode, k, dense, ties):
    rng = np.random.default_rng(zlib.crc32(repr((dtype, mode, k, dense, ties)).encode()))
    sizes = {"token": 50, "pos": 5}
    n = 40
    cpu, dev = _pair(n, sizes, mode, k, dense)
    for batch in range(4):  # several updates, the last ones larger: sparse tables grow
        shape = (3, 20 + 40 * batch, n)
        acts = _acts(rng, shape, dtype, ties)
        feats = {kind: torch.from_numpy(rng.integers(0, s, shape[:2])) for kind, s in sizes.items()}
        mask = torch.from_numpy(rng.random(shape[:2]) < 0.8)
        acts[~mask] = float("nan")  # padding may hold anything
        cpu.update(acts, feats, mask=mask)
        dev.update(acts.cuda(), {kind: v.cuda() for kind, v in feats.items()}, mask=mask.cuda())
    assert dev.profile().kinds == cpu.profile().kinds
    _assert_same_profile(cpu.profile(), dev.profile())


@gpu
@pytest.mark.parametrize("mode,k", MODES)
def test_gpu_host_ids_strided_inputs_and_reference(mode, k):
    rng = np.random.default_rng(7)
    n = 33  # not a multiple of the vector width: scalar tails
    base = torch.from_numpy(rng.standard_normal((64, 2 * n + 3)).astype(np.float32))
    column_major = base[:, :n].t().contiguous()
    views = [  # the same view of a CPU and a CUDA copy
        lambda b, c: b[:, :n],
        lambda b, c: b[:, 3 : 3 + 2 * n : 2],
        lambda b, c: c.t(),
        lambda b, c: b[::2, 1 : n + 1],
    ]
    for make in views:
        view = make(base, column_major)
        on_device = make(base.cuda(), column_major.cuda())
        assert on_device.stride() == view.stride()
        feats = {kind: rng.integers(0, s, view.shape[0]) for kind, s in SIZES.items()}  # host ids
        mask = rng.random(view.shape[0]) < 0.7  # host mask
        cpu, dev = _pair(n, SIZES, mode, k, dense=True)
        cpu.update(view, feats, mask=mask)
        dev.update(on_device, feats, mask=mask)
        _assert_same_profile(cpu.profile(), dev.profile())
        count, total, *_ = reference.record(view.numpy(), feats, SIZES, mode, k, mask)
        got = reference.dense_from_table(dev.profile().table("token"), n, SIZES["token"])
        np.testing.assert_array_equal(got[0], count["token"])
        np.testing.assert_allclose(got[1], total["token"], rtol=1e-12, atol=1e-9)


@gpu
def test_gpu_large_rows_and_vocabulary():
    rng = np.random.default_rng(8)
    n, sizes = 3072, {"token": 30522, "pos": 45}
    cpu = txray.Recorder(n, sizes)
    dev = txray.Recorder(n, sizes, device="cuda")
    sparse = txray.Recorder(n, sizes, device="cuda", dense_limit_bytes=0)
    for _ in range(3):
        acts = _acts(rng, (8, 128, n), "float16")
        feats = {kind: torch.from_numpy(rng.integers(0, s, (8, 128))) for kind, s in sizes.items()}
        cpu.update(acts, feats)
        dev.update(acts.cuda(), {kd: v.cuda() for kd, v in feats.items()})
        sparse.update(acts.cuda(), {kd: v.cuda() for kd, v in feats.items()})
    _assert_same_profile(cpu.profile(), dev.profile())
    _assert_same_profile(cpu.profile(), sparse.profile())


@gpu
@pytest.mark.parametrize("mode,k", MODES)
@pytest.mark.parametrize("bad,word", [(float("nan"), "NaN"), (float("inf"), "infinite")])
def test_gpu_non_finite_values_are_raised_at_the_next_sync(mode, k, bad, word):
    rng = np.random.default_rng(9)
    cpu, dev = _pair(8, SIZES, mode, k, dense=True)
    good = _acts(rng, (2, 3, 8), "float32")
    feats = {kind: torch.zeros((2, 3), dtype=torch.int64) for kind in SIZES}
    badacts = good.clone()
    badacts[1, 2, 3] = bad
    badacts[1, 2, 5] = bad
    for acts in (good, badacts, good):
        dev.update(acts.cuda(), {kd: v.cuda() for kd, v in feats.items()})
    with pytest.raises(
        ValueError,
        match=f"update 2: activation of token 5 \\(axis 0: 1, axis 1: 2\\) at neuron 3 is {word}.*or of the 1 after it",
    ):
        dev.synchronize()
    cpu.update(good, feats)  # only the first update was recorded
    _assert_same_profile(cpu.profile(), dev.profile())
    dev.update(good.cuda(), {kd: v.cuda() for kd, v in feats.items()})  # recording goes on after the error
    cpu.update(good, feats)
    _assert_same_profile(cpu.profile(), dev.profile())


@gpu
def test_gpu_bad_ids_are_raised_like_on_the_cpu():
    dev = txray.Recorder(4, SIZES, device="cuda")
    acts = torch.zeros((2, 4), device="cuda")
    bad = {"token": torch.tensor([0, 7], device="cuda"), "pos": torch.tensor([-1, 0], device="cuda")}
    dev.update(acts, bad)
    # the same error as the CPU's: the lowest token first (token 0's pos), then the first kind
    cpu = txray.Recorder(4, SIZES)
    with pytest.raises(ValueError) as on_cpu:
        cpu.update(acts.cpu(), {kind: ids.cpu() for kind, ids in bad.items()})
    assert "feature 'pos' of token 0 is -1" in str(on_cpu.value)
    with pytest.raises(ValueError, match="update 1: feature 'pos' of token 0 is -1, outside its vocabulary \\[0, 3\\)"):
        dev.synchronize()
    assert dev.tokens == 0
    dev.update(acts, {"token": [0, 1], "pos": [0, 0]}, mask=[True, False])
    assert dev.tokens == 1
    with pytest.raises(ValueError, match="4 neurons"):
        txray.Recorder(5, SIZES, device="cuda").update(acts, {"token": [0, 1], "pos": [0, 0]})


@gpu
@pytest.mark.parametrize("mode,k", MODES)
@pytest.mark.parametrize("dense", [True, False])
def test_gpu_merge_equals_the_whole(mode, k, dense):
    rng = np.random.default_rng(10)
    acts = _acts(rng, (90, 12), "float32", ties=True).cuda()
    feats = {kind: torch.from_numpy(rng.integers(0, s, 90)).cuda() for kind, s in SIZES.items()}
    limit = 1 << 30 if dense else 0
    whole = txray.Recorder(12, SIZES, mode=mode, k=k, device="cuda", dense_limit_bytes=limit)
    whole.update(acts, feats)
    a = txray.Recorder(12, SIZES, mode=mode, k=k, device="cuda", dense_limit_bytes=limit)
    b = txray.Recorder(12, SIZES, mode=mode, k=k, device="cuda", dense_limit_bytes=limit)
    a.update(acts[:40], {kd: v[:40] for kd, v in feats.items()})
    b.update(acts[40:], {kd: v[40:] for kd, v in feats.items()})
    _assert_same_profile(whole.profile(), a.merge(b).profile())
    with pytest.raises(ValueError, match="merge their profiles"):
        a.merge(txray.Recorder(12, SIZES, mode=mode, k=k))


@gpu
def test_gpu_streams_cuda_array_interface_and_dlpack():
    rng = np.random.default_rng(11)
    acts = _acts(rng, (200, 24), "float16").cuda()
    feats = {kind: torch.from_numpy(rng.integers(0, s, 200)).cuda() for kind, s in SIZES.items()}
    cpu = txray.Recorder(24, SIZES)
    cpu.update(acts.cpu(), {kd: v.cpu() for kd, v in feats.items()})

    side = torch.cuda.Stream()
    with torch.cuda.stream(side):  # torch's current stream is used
        on_side = txray.Recorder(24, SIZES, device="cuda")
        on_side.update(acts, feats)
    _assert_same_profile(cpu.profile(), on_side.profile())

    class CAI:
        def __init__(self, t):
            self.t = t
            self.__cuda_array_interface__ = t.__cuda_array_interface__

    via_cai = txray.Recorder(24, SIZES, device="cuda")
    via_cai.update(CAI(acts), {kd: CAI(v) for kd, v in feats.items()})
    _assert_same_profile(cpu.profile(), via_cai.profile())

    class DL:
        def __init__(self, t):
            self.t = t

        def __dlpack__(self, stream=None, **kwargs):
            return self.t.__dlpack__(stream=stream)

        def __dlpack_device__(self):
            return self.t.__dlpack_device__()

    via_dlpack = txray.Recorder(24, SIZES, device="cuda")
    via_dlpack.update(DL(acts), {kd: DL(v) for kd, v in feats.items()})
    bf = txray.Recorder(24, SIZES, device="cuda")
    bf.update(DL(acts.to(torch.bfloat16)), feats)
    _assert_same_profile(cpu.profile(), via_dlpack.profile())
    ref = txray.Recorder(24, SIZES)
    ref.update(acts.to(torch.bfloat16).cpu(), {kd: v.cpu() for kd, v in feats.items()})
    _assert_same_profile(ref.profile(), bf.profile())


@gpu
def test_gpu_no_input_is_read_after_it_is_freed():
    # inputs the Python layer converted (int32 ids -> int64) must live until
    # the kernels that read them have run
    rng = np.random.default_rng(12)
    cpu = txray.Recorder(16, SIZES)
    dev = txray.Recorder(16, SIZES, device="cuda")
    for _ in range(20):
        acts = _acts(rng, (500, 16), "float32")
        feats = {kind: torch.from_numpy(rng.integers(0, s, 500).astype(np.int32)) for kind, s in SIZES.items()}
        cpu.update(acts, feats)
        dev.update(
            acts.cuda(),
            {kd: v.cuda() for kd, v in feats.items()},
            mask=torch.ones(500, dtype=torch.int32, device="cuda"),
        )
        torch.cuda.empty_cache()
    _assert_same_profile(cpu.profile(), dev.profile())


# -- GPU: the review's cases (issue 22) -------------------------------------------
# Written to run first on a scarce GPU session (scripts/gpu_check.sh): each
# compares with the CPU engine on the same inputs, or checks a bound.


def _busy(ms=20):
    """Keep torch's current stream busy for about ms milliseconds (a sleep kernel)."""
    torch.cuda._sleep(int(ms * 1e6))


@gpu
def test_gpu_soak_without_synchronising_keeps_inputs_and_memory_bounded():
    rng = np.random.default_rng(21)
    cpu, dev = _pair(64, SIZES, "max1", None, dense=True)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    most = 0
    for i in range(200):
        acts = _acts(rng, (256, 64), "float16").cuda()
        feats = {kind: torch.from_numpy(rng.integers(0, s, 256)).to(torch.int32).cuda() for kind, s in SIZES.items()}
        if i % 10 == 0:
            _busy(5)  # the device stays behind the host
        dev.update(acts, feats)  # int32 ids: converted copies that must stay alive until read
        cpu.update(acts.cpu(), {kind: v.cpu() for kind, v in feats.items()})
        most = max(most, dev._backend.inflight)
    assert most <= 65  # kMaxInFlight (64) + the update being added
    grown = torch.cuda.memory_allocated() - before
    assert grown < 70 * (256 * 64 * 2 + 2 * 256 * 8 * 2), f"{grown} bytes still held"
    _assert_same_profile(cpu.profile(), dev.profile())
    assert dev._backend.inflight == 0


@gpu
def test_gpu_size_one_ids_with_other_strides():
    ids = torch.arange(10, device="cuda").reshape(1, 10)[:, -1:] - 6  # id 3
    assert ids.shape == (1, 1) and ids.stride() == (10, 1)
    cpu, dev = _pair(4, {"token": 7}, "max1", None, dense=True)
    acts = torch.tensor([[[0.0, 2.0, 1.0, 0.5]]])
    dev.update(acts.cuda(), {"token": ids})
    cpu.update(acts, {"token": ids.cpu()})
    _assert_same_profile(cpu.profile(), dev.profile())


@gpu
def test_gpu_explicit_stream_waits_for_the_busy_current_stream():
    rng = np.random.default_rng(22)
    cpu, dev = _pair(32, SIZES, "max1", None, dense=True)
    side = torch.cuda.Stream()
    for _ in range(5):
        host = _acts(rng, (300, 32), "float32")
        source = host.cuda()
        torch.cuda.synchronize()
        _busy(20)  # the current stream is busy ...
        acts = source * 1.0  # ... and writes the activations after it
        feats = {kind: torch.from_numpy(rng.integers(0, s, 300)).cuda() for kind, s in SIZES.items()}
        dev.update(acts, feats, stream=side)  # the kernels on another stream must wait for it
        cpu.update(host, {kind: v.cpu() for kind, v in feats.items()})
    _assert_same_profile(cpu.profile(), dev.profile())


@gpu
def test_gpu_error_reset_is_ordered_before_the_next_update_on_another_stream():
    cpu, dev = _pair(8, SIZES, "max1", None, dense=True)
    bad = torch.zeros((4, 8), device="cuda")
    bad[2, 5] = float("nan")
    ok = {
        "token": torch.zeros(4, dtype=torch.int64, device="cuda"),
        "pos": torch.zeros(4, dtype=torch.int64, device="cuda"),
    }
    dev.update(bad, ok)
    with pytest.raises(ValueError, match="update 1: activation of token 2 at neuron 5 is NaN"):
        dev.synchronize()
    other = torch.cuda.Stream()
    good = torch.arange(32, dtype=torch.float32, device="cuda").reshape(4, 8)
    dev.update(good, ok, stream=other)  # at once, on another stream: must see the reset error state
    cpu.update(good.cpu(), {k: v.cpu() for k, v in ok.items()})
    _assert_same_profile(cpu.profile(), dev.profile())
    assert dev.tokens == 4


@gpu
@pytest.mark.parametrize("mode,k", [("max1", None), ("topk", 4), ("all", None)])
@pytest.mark.parametrize("dense", [True, False])
def test_gpu_worst_case_contention_counts_exactly(mode, k, dense):
    # every token the same id and the same winner: one address takes every atomic
    tokens, n = 200_000, 16
    acts = torch.zeros((tokens, n))
    acts[:, 3] = 1.0
    acts[:, 7] = 0.5
    feats = {"token": torch.full((tokens,), 5, dtype=torch.int64), "pos": torch.full((tokens,), 2, dtype=torch.int64)}
    cpu, dev = _pair(n, SIZES, mode, k, dense)
    dev.update(acts.cuda(), {kd: v.cuda() for kd, v in feats.items()})
    cpu.update(acts, feats)
    a, b = cpu.profile(), dev.profile()
    _assert_same_profile(a, b)
    if mode == "max1":
        assert b.table("token").column("count").to_pylist() == [tokens]


@gpu
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("mode,k", [("max1", None), ("topk", 3), ("all", None)])
def test_gpu_half_precision_tails_unaligned_and_strided(dtype, mode, k):
    rng = np.random.default_rng(23)
    n = 45  # N % 8 != 0: vector loads plus a scalar tail
    base = _acts(rng, (200, 2 * n + 3), dtype)
    on_device = base.cuda()
    views = [
        lambda b: b[:, 1 : n + 1],  # start not 16-byte aligned
        lambda b: b[:, 3 : 3 + 2 * n : 2],  # strided columns
        lambda b: b[1::3, :n],
    ]
    for make in views:
        cpu, dev = _pair(n, SIZES, mode, k, dense=True)
        view, dview = make(base), make(on_device)
        feats = {kind: torch.from_numpy(rng.integers(0, s, view.shape[0])) for kind, s in SIZES.items()}
        cpu.update(view, feats)
        dev.update(dview, {kd: v.cuda() for kd, v in feats.items()})
        _assert_same_profile(cpu.profile(), dev.profile())


@gpu
def test_gpu_more_host_arrays_than_staging_slots():
    rng = np.random.default_rng(24)
    sizes = {f"kind{i}": 5 + i for i in range(10)}  # 10 host id arrays and a host mask in one update
    cpu, dev = _pair(12, sizes, "topk", 2, dense=False)
    for _ in range(3):
        acts = _acts(rng, (500, 12), "float32")
        feats = {kind: rng.integers(0, s, 500) for kind, s in sizes.items()}
        mask = rng.random(500) < 0.9
        cpu.update(acts, feats, mask=mask)
        dev.update(acts.cuda(), feats, mask=mask)
    _assert_same_profile(cpu.profile(), dev.profile())


@gpu
def test_gpu_more_than_2_to_the_31_elements():
    free, _ = torch.cuda.mem_get_info()
    tokens, n = 2**21 + 3, 1024  # 2^31 + 3072 elements, 4 GiB of float16
    if free < 3 * tokens * n * 2:
        pytest.skip("needs about 12 GiB of free device memory")
    gen = torch.Generator(device="cuda").manual_seed(25)
    acts = torch.randn((tokens, n), device="cuda", dtype=torch.float16, generator=gen)
    ids = torch.randint(0, 7, (tokens,), device="cuda", generator=gen)
    dev = txray.Recorder(n, {"token": 7}, device="cuda")
    dev.update(acts, {"token": ids})
    # the reference: torch's argmax (ties are improbable in random float16 rows of 1024,
    # and the counts of the last rows, past 2^31 elements, are checked on their own)
    winners = acts.argmax(dim=1)  # the first maximum, as txray's ties
    expected = torch.zeros((7, n), dtype=torch.int64, device="cuda")
    expected.index_put_((ids, winners), torch.ones_like(ids), accumulate=True)
    table = dev.profile().table("token")
    got = torch.zeros((7, n), dtype=torch.int64)
    got[table.column("feature").to_numpy(), table.column("neuron").to_numpy()] = torch.from_numpy(
        table.column("count").to_numpy()
    )
    assert torch.equal(got, expected.cpu())
    tail = txray.Recorder(n, {"token": 7})
    tail.update(acts[-5:].cpu(), {"token": ids[-5:].cpu()})
    last = txray.Recorder(n, {"token": 7}, device="cuda")
    last.update(acts[-5:], {"token": ids[-5:]})
    _assert_same_profile(tail.profile(), last.profile())


@gpu
@pytest.mark.parametrize("k", [64, 96])
def test_gpu_topk_large_k_and_k_equal_n(k):
    rng = np.random.default_rng(26)
    n = 96  # k = 96 = N: every neuron wins every token
    cpu, dev = _pair(n, SIZES, "topk", k, dense=True)
    acts = _acts(rng, (300, n), "float32", ties=True)
    feats = {kind: torch.from_numpy(rng.integers(0, s, 300)) for kind, s in SIZES.items()}
    cpu.update(acts, feats)
    dev.update(acts.cuda(), {kd: v.cuda() for kd, v in feats.items()})
    _assert_same_profile(cpu.profile(), dev.profile())


@gpu
@pytest.mark.parametrize("mode,k", [("max1", None), ("topk", 5), ("all", None)])
def test_gpu_sparse_growth_while_sizes_have_not_landed(mode, k):
    rng = np.random.default_rng(27)
    sizes = {"token": 50_000, "pos": 45}
    cpu, dev = _pair(256, sizes, mode, k, dense=False)
    for i in range(12):
        _busy(10)  # the size read back after each update lands late: the bound decides growth
        acts = _acts(rng, (4000 * (1 + i % 3), 256), "float16")
        feats = {kind: torch.from_numpy(rng.integers(0, s, acts.shape[0])) for kind, s in sizes.items()}
        dev.update(acts.cuda(), {kd: v.cuda() for kd, v in feats.items()})
        cpu.update(acts, feats)
    _assert_same_profile(cpu.profile(), dev.profile())


@gpu
def test_gpu_a_second_current_device():
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA devices")
    rng = np.random.default_rng(28)
    cpu = txray.Recorder(16, SIZES)
    with torch.cuda.device(1):
        dev = txray.Recorder(16, SIZES, device="cuda")
        assert dev.device == "cuda:1"
        acts = _acts(rng, (100, 16), "float32")
        feats = {kind: torch.from_numpy(rng.integers(0, s, 100)) for kind, s in SIZES.items()}
        dev.update(acts.cuda(), {kd: v.cuda() for kd, v in feats.items()})
    with torch.cuda.device(0):  # used from another current device
        cpu.update(acts, feats)
        _assert_same_profile(cpu.profile(), dev.profile())
        with pytest.raises(ValueError, match="cuda:0"):
            dev.update(acts.cuda(0), feats)


@gpu
def test_gpu_dlpack_with_the_default_stream():
    rng = np.random.default_rng(29)
    acts = _acts(rng, (100, 16), "float32").cuda()
    feats = {kind: torch.from_numpy(rng.integers(0, s, 100)).cuda() for kind, s in SIZES.items()}
    asked = []

    class DL:
        def __init__(self, t):
            self.t = t

        def __dlpack__(self, stream=None, **kwargs):
            asked.append(stream)
            return self.t.__dlpack__(stream=stream)

        def __dlpack_device__(self):
            return self.t.__dlpack_device__()

    cpu, dev = _pair(16, SIZES, "max1", None, dense=True)
    dev.update(DL(acts), {kd: DL(v) for kd, v in feats.items()})
    cpu.update(acts.cpu(), {kd: v.cpu() for kd, v in feats.items()})
    assert asked and 0 not in asked and set(asked) == {1}
    _assert_same_profile(cpu.profile(), dev.profile())


@gpu
def test_gpu_graph_capture_is_refused_clearly():
    dev = txray.Recorder(8, SIZES, device="cuda")
    acts = torch.zeros((4, 8), device="cuda")
    ids = {k: torch.zeros(4, dtype=torch.int64, device="cuda") for k in SIZES}
    graph = torch.cuda.CUDAGraph()
    with pytest.raises(ValueError, match="CUDA graph is being captured"):
        with torch.cuda.graph(graph):
            acts.add_(1.0)  # the graph is not empty
            dev.update(acts, ids)
    dev.update(acts, ids)  # usable after the refusal
    assert dev.tokens == 4


@gpu
@pytest.mark.parametrize("mode", ["max1", "all"])
def test_gpu_record_model_matches_the_cpu(mode):
    # the same toy model on the GPU: the device path (recorders in the hooks) against record_on="cpu"
    from torch import nn

    class Tagger(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(40, 8, padding_idx=0)
            self.mlp = nn.Sequential(nn.Linear(8, 16), nn.GELU())

        def forward(self, ids):
            return self.mlp(self.embed(ids))

    torch.manual_seed(0)
    words = ["<pad>", "<unk>"] + [f"w{i}" for i in range(38)]
    rng = np.random.default_rng(30)
    corpus = [" ".join(rng.choice(words[2:], size=rng.integers(1, 15))) for _ in range(60)]
    model, tok = Tagger().cuda().eval(), txray.VocabTokenizer(words, pad_id=0)
    layers = ["embed", "mlp"]
    # "first" pooling: index_select, deterministic on the GPU, so both runs see the same rows
    run = dict(mode=mode, max_tokens=64, progress=False, pooling="first", contexts=0)
    on_device = txray.record_model(model, tok, corpus, layers, **run)
    on_cpu = txray.record_model(model, tok, corpus, layers, record_on="cpu", **run)
    for layer in layers:
        _assert_same_profile(on_cpu[layer], on_device[layer])
