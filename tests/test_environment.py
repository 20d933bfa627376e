"""The environment beside every number: the GPUs' interconnect as `nvidia-smi topo -m` prints it."""
from __future__ import annotations

from harness import environment

# An 8-GPU NVLink machine (DGX H100 layout, trimmed to 4 GPUs), header underlined as some drivers print it
NVLINK = ("\x1b[4m\tGPU0\tGPU1\tGPU2\tGPU3\tNIC0\tNIC1\tCPU Affinity\tNUMA Affinity\tGPU NUMA ID\x1b[0m\n"
          "GPU0\t X \tNV18\tNV18\tNV18\tPXB\tSYS\t0-55,112-167\t0\t\tN/A\n"
          "GPU1\tNV18\t X \tNV18\tNV18\tSYS\tPXB\t0-55,112-167\t0\t\tN/A\n"
          "GPU2\tNV18\tNV18\t X \tNV18\tSYS\tSYS\t0-55,112-167\t0\t\tN/A\n"
          "GPU3\tNV18\tNV18\tNV18\t X \tSYS\tSYS\t0-55,112-167\t0\t\tN/A\n"
          "NIC0\tPXB\tSYS\tSYS\tSYS\t X \tSYS\t\t\t\t\n"
          "NIC1\tSYS\tPXB\tSYS\tSYS\tSYS\t X \t\t\t\t\n\n"
          "Legend:\n\n  X    = Self\n  NV#  = Connection traversing a bonded set of # NVLinks\n\n"
          "NIC Legend:\n\n  NIC0: mlx5_0\n  NIC1: mlx5_1\n")
PCIE = ("\tGPU0\tGPU1\tCPU Affinity\tNUMA Affinity\tGPU NUMA ID\n"
        "GPU0\t X \tSYS\t0-15\t0\t\tN/A\nGPU1\tSYS\t X \t16-31\t1\t\tN/A\n\nLegend: ...\n")
# the lent H100, as environment._run returns it (stripped: the header's leading tab is gone)
ONE = "\x1b[4mGPU0\tCPU Affinity\tNUMA Affinity\tGPU NUMA ID\x1b[0m\nGPU0\t X \t0-15\t0\t\tN/A\n\nLegend:\n\n  X    = Self\n"


def test_nvlink_machine_is_read_pair_by_pair_with_its_nics():
    topo = environment.parse_topology(NVLINK)
    assert len(topo["gpu_links"]) == 6 and set(topo["gpu_links"].values()) == {"NV18"}
    assert topo["summary"].startswith("NVLink between every pair of GPUs (NV18")
    assert topo["nics"] == {"NIC0": "mlx5_0", "NIC1": "mlx5_1"}


def test_pcie_and_single_gpu_machines():
    topo = environment.parse_topology(PCIE)
    assert topo["gpu_links"] == {"GPU0-GPU1": "SYS"}
    assert topo["summary"] == "1 pair(s) over SYS (PCIe and the SMP link between NUMA nodes (QPI/UPI))"
    assert environment.parse_topology(ONE) == {"gpu_links": {}, "summary": "one GPU: no link between GPUs", "nics": {}}


def test_every_record_says_whether_an_interconnect_is_known(monkeypatch):
    monkeypatch.setattr(environment, "_run", lambda cmd, cwd=None: PCIE if cmd[:2] == ["nvidia-smi", "topo"] else None)
    found = environment.interconnect()
    assert found["summary"].startswith("1 pair(s) over SYS") and found["topo"] == PCIE
    monkeypatch.setattr(environment, "_run", lambda cmd, cwd=None: None)  # no nvidia-smi: no GPUs, nothing to link
    assert environment.interconnect() is None
    assert "interconnect" in environment.collect.__wrapped__()
