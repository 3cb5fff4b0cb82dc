"""adapt.records.environment_info: what every run record stores about the machine and the kernels."""
import json
import os
import platform
import sys

import pytest
import torch

from adapt.records import environment_info

KEYS = {
    # kept from the first record layout
    "adapt": str, "python": str, "torch": str, "numpy": str, "platform": str, "device": (str, type(None)),
    "threads": int,
    # what decides float32 rounding on a CPU
    "machine": str, "cpu_model": (str, type(None)), "cpu_count": (int, type(None)), "cpu_flags": (list, type(None)),
    "cpu_capability": str, "aten_cpu_capability_env": (str, type(None)), "blas": (str, type(None)),
    "lapack": (str, type(None)), "mkl": (str, type(None)), "mkldnn": (str, type(None)), "openmp": (str, type(None)),
    "mkl_available": bool, "mkldnn_available": bool, "parallel_backend": (str, type(None)),
    "torch_git": (str, type(None)), "interop_threads": int, "thread_env": dict, "numba": (str, type(None)),
    "numba_threads": (int, type(None)), "numba_threading_layer": (str, type(None)),
    "deterministic_algorithms": bool, "deterministic_warn_only": bool, "float32_matmul_precision": str,
}


def test_keys_types_and_json_round_trip():
    info = environment_info("cpu")
    assert set(KEYS) <= set(info)
    for key, kind in KEYS.items():
        assert isinstance(info[key], kind), (key, info[key])
    assert json.loads(json.dumps(info, allow_nan=False)) == info


def test_values_are_torchs():
    info = environment_info(torch.device("cpu"))
    assert info["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert info["torch"] == torch.__version__
    assert info["python"] == sys.version.split()[0]
    assert info["machine"] == platform.machine()
    assert info["device"] == "cpu"
    assert info["threads"] == torch.get_num_threads()
    assert info["interop_threads"] == torch.get_num_interop_threads()
    assert info["mkldnn_available"] == torch.backends.mkldnn.is_available()
    assert info["mkl_available"] == torch.backends.mkl.is_available()
    assert info["deterministic_algorithms"] == torch.are_deterministic_algorithms_enabled()
    assert info["aten_cpu_capability_env"] == os.environ.get("ATEN_CPU_CAPABILITY")
    assert environment_info(None)["device"] is None


def test_threads_follow_torch():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert environment_info("cpu")["threads"] == 1
    finally:
        torch.set_num_threads(before)


def test_build_info_parsed_from_torch_config():
    info = environment_info("cpu")
    config = torch.__config__.show()
    if "BLAS_INFO=" in config:
        assert info["blas"] and f"BLAS_INFO={info['blas']}" in config
    if "MKL-DNN" in config or "oneDNN" in config:
        assert info["mkldnn"] and info["mkldnn"] in config
    if info["mkl"] is not None:
        assert info["mkl"] in config


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/cpuinfo is Linux's")
def test_cpu_model_from_proc_cpuinfo():
    text = open("/proc/cpuinfo").read()
    names = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")]
    if names:
        assert environment_info("cpu")["cpu_model"] == names[0]


def test_thread_and_isa_variables_are_recorded(monkeypatch):
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    info = environment_info("cpu")
    assert info["aten_cpu_capability_env"] == "default"
    assert info["thread_env"]["ATEN_CPU_CAPABILITY"] == "default" and info["thread_env"]["OMP_NUM_THREADS"] == "1"


def test_no_host_or_user_names():
    blob = json.dumps(environment_info("cpu"))
    host = platform.node()
    if host and len(host) > 3:
        assert host not in blob
    for var in ("USER", "LOGNAME"):
        name = os.environ.get(var)
        if name and len(name) > 3:
            assert f'"{name}"' not in blob and f"/{name}/" not in blob


def test_never_raises_when_probes_fail(monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("probe failed")

    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", boom)
    monkeypatch.setattr(torch.__config__, "show", boom)
    monkeypatch.setattr(torch.__config__, "parallel_info", boom)
    monkeypatch.setattr(torch, "get_num_interop_threads", boom)
    monkeypatch.setattr(platform, "processor", boom)
    info = environment_info("cpu")
    assert info["cpu_capability"] is None and info["blas"] is None and info["interop_threads"] is None
    assert info["torch"] == torch.__version__
    json.dumps(info)


def test_numba_only_when_already_imported(monkeypatch):
    """numba is not imported by environment_info (its version comes from the package metadata)."""
    monkeypatch.delitem(sys.modules, "numba", raising=False)
    info = environment_info("cpu")
    assert "numba" not in sys.modules
    assert info["numba_threads"] is None and info["numba_threading_layer"] is None


def test_numba_threading_layer_once_the_kernels_ran():
    pytest.importorskip("numba")
    from adapt.quant import cpu_kernel_threading

    layer = cpu_kernel_threading()
    info = environment_info("cpu")
    assert info["numba_threading_layer"] == layer
    assert isinstance(info["numba_threads"], int) and info["numba_threads"] >= 1
