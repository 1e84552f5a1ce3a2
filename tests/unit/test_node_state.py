"""The node's record of machine-wide state: what counts as a change (the node tests' teardown
fails on any)."""

from __future__ import annotations

from devtools.node import HOST_PATHS, MachineState


def state(**over: object) -> MachineState:
    base: dict[str, object] = {
        "sysctls": {"vm.overcommit_memory": "0", "net.ipv4.ip_forward": "0"},
        "iptables": {"filter": [":INPUT ACCEPT", ":FORWARD ACCEPT"]},
        "ip6tables": {}, "nft": [], "nfacct": [],
        "paths": {p: False for p in HOST_PATHS}, "cgroups": [], "links": ["eth0", "lo"]}
    base.update(over)
    return MachineState(**base)  # type: ignore[arg-type]


def test_identical_states_differ_in_nothing() -> None:
    assert state().differences(state()) == []


def test_every_kind_of_leftover_is_named() -> None:
    after = state(
        sysctls={"vm.overcommit_memory": "1", "net.ipv4.ip_forward": "0"},
        iptables={"filter": [":INPUT ACCEPT", ":FORWARD ACCEPT", ":KUBE-FORWARD -",
                             "-A FORWARD -j KUBE-FORWARD"]},
        nft=["table ip kube-proxy"], nfacct=["ct_state_invalid_dropped_pkts"],
        paths={**{p: False for p in HOST_PATHS}, "/var/lib/kubelet": True},
        cgroups=["/sys/fs/cgroup/memory/kubepods"], links=["eth0", "lo", "sigops0"])
    diff = state().differences(after)
    assert "sysctl vm.overcommit_memory: 0 -> 1" in diff
    assert "iptables -t filter: added :KUBE-FORWARD -" in diff
    assert "iptables -t filter: added -A FORWARD -j KUBE-FORWARD" in diff
    assert "nft: added table ip kube-proxy" in diff
    assert "nfacct: added ct_state_invalid_dropped_pkts" in diff
    assert "path /var/lib/kubelet: created" in diff
    assert "cgroup added: /sys/fs/cgroup/memory/kubepods" in diff
    assert "link added: sigops0" in diff
    assert len(diff) == 8


def test_a_sysctl_that_appeared_or_went_is_not_a_change() -> None:
    # Per-interface keys come and go with their interfaces (the bridge, veths).
    after = state(sysctls={"vm.overcommit_memory": "0", "net.ipv4.ip_forward": "0",
                           "net.ipv4.conf.sigops0.forwarding": "1"})
    assert state().differences(after) == []


def test_round_trips_through_its_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = state(nft=["table ip x"])
    s.save(tmp_path / "before.json")
    assert MachineState.load(tmp_path / "before.json") == s
