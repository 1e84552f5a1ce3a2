"""``sigops testbed backend|agents|rules``: the reference backend, the agent simulator, the rule.

JSON on stdout (the backend prints ``{"url": ...}`` once listening; agents print their report),
logs on stderr. Exit codes: 0 success, 1 the run got no answer at all, 2 usage or configuration.
Key material is taken from env vars, files or Secrets, never from the command line (it would
show in ``ps``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["main", "build_parser"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class _Usage(Exception):
    """A usage or configuration problem: exit 2 with its message."""


def _seconds(text: str) -> float:
    from ..core.timeparse import parse_duration

    try:
        return float(text)
    except ValueError:
        pass
    try:
        return parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _fault(text: str) -> Any:
    from .faults import parse_fault

    try:
        return parse_fault(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


# -- backend -----------------------------------------------------------------------------------


def _backend(a: argparse.Namespace) -> int:
    from ..backend.config import EnvNames
    from .backend import Backend, BackendServer, BackendSettings
    from .reload import ConfigError, DeploymentWatcher, config_from_env, single_key_names

    try:
        from ..core.canonical import PROFILES

        if a.profile not in PROFILES:
            raise _Usage(f"unknown profile {a.profile!r}; known: {', '.join(PROFILES)}")
        settings = BackendSettings(
            profile=a.profile, max_skew_seconds=a.max_skew, clock_offset_seconds=a.clock_offset,
            signature_error_metric=a.signature_error_metric, dedup_ttl_seconds=a.dedup_ttl,
            samples_max=a.samples_max, max_body_bytes=a.max_body,
            wal_dir=a.wal_dir or os.environ.get("WAL_DIR") or None,
            samples_endpoint=not a.no_samples_endpoint)
        names = EnvNames()
        if a.single_key:
            names = single_key_names(names)
        host, _, port = a.listen.rpartition(":")
        if not port.isdigit():
            raise _Usage(f"--listen {a.listen!r} must be host:port")
        watcher = None
        if a.deployment:
            from ..kube.api import Kube

            backend = Backend(settings)
            watcher = DeploymentWatcher(
                Kube.connect(a.kubeconfig), a.namespace, a.deployment, backend.apply,
                container=a.container, names=names, interval=a.poll_interval,
                on_error=backend.report_error)
        else:
            env = dict(os.environ)
            for flag, name in ((a.sign_alg, names.sign_alg), (a.token_rate, names.token_rate),
                               (a.ed25519_pub_b64, names.ed25519_pub)):
                if flag is not None:
                    env[name] = flag
            backend = Backend(settings, config_from_env(env, names))
        server = BackendServer(backend, host.strip("[]") or "127.0.0.1", int(port), watcher)
    except ConfigError as e:
        raise _Usage(str(e)) from None
    server.start()
    signal.signal(signal.SIGTERM, _interrupt)  # stop cleanly on SIGTERM like on Ctrl-C
    print(json.dumps({"url": server.url, "config": backend.current_config()}), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.drain(a.shutdown_delay)
    finally:
        server.stop()
    return EXIT_OK


# -- agents ------------------------------------------------------------------------------------


def _agents(a: argparse.Namespace) -> int:
    from ..core.errors import SigopsError
    from .agents import AgentPlan, AgentSimulator
    from .keysource import KeySource, parse_key_spec

    specs = [s for s in (a.key, a.key_file and f"file:{a.key_file}",
                         a.key_env and f"env:{a.key_env}", a.secret and f"secret:{a.secret}")
             if s]
    if len(specs) != 1:
        raise _Usage("give exactly one of --key, --key-file, --key-env, --secret")

    def reader() -> Any:
        from ..kube.api import Kube

        return Kube.connect(a.kubeconfig).secret_value

    def source(spec: str | None) -> KeySource | None:
        return None if spec is None else parse_key_spec(spec, a.alg, secret_reader=reader)

    try:
        key = source(specs[0])
        assert key is not None
        plan = AgentPlan(
            url=a.url, rate=a.rate, duration=a.duration, count=a.count, agents=a.agents,
            faults=tuple(a.fault or ()), fault_fraction=a.fault_fraction, profile=a.profile,
            seed=a.seed, workers=a.workers, timeout=a.timeout, agent_prefix=a.agent_prefix,
            clock_offset_seconds=a.clock_offset)
        sim = AgentSimulator(plan, key, old_key=source(a.old_key), new_key=source(a.new_key))
    except (SigopsError, ValueError) as e:
        raise _Usage(str(e)) from None
    signal.signal(signal.SIGTERM, lambda *_: sim.stop())
    report = sim.run()
    print(json.dumps(report), flush=True)
    answered = sum(n for s, n in report["by_status"].items() if s != "error")
    return EXIT_OK if answered or not report["sent"] else EXIT_FAILED


# -- rules -------------------------------------------------------------------------------------


def _rules(a: argparse.Namespace) -> int:
    import yaml

    from .rules import signature_failure_rule

    try:
        doc = signature_failure_rule(metric=a.metric, window=a.window, for_=getattr(a, "for"),
                                     threshold=a.threshold, runbook_url=a.runbook_url)
    except ValueError as e:
        raise _Usage(str(e)) from None
    text = yaml.safe_dump(doc, sort_keys=False)
    if a.output:
        with open(a.output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return EXIT_OK


# -- parser ------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The ``sigops testbed`` argument parser."""
    from .rules import RUNBOOK_URL

    p = argparse.ArgumentParser(prog="sigops testbed",
                                description="reference FLK backend, agent simulator and alert "
                                            "rule for drills and e2e tests")
    # Options go after the verb: `sigops testbed --x` would reach the main CLI's parser first.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--log-level", default="INFO",
                        choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    sub = p.add_subparsers(dest="verb", required=True)

    b = sub.add_parser("backend", parents=[common],
                       help="run the reference backend (POST /v1/pcs/submit)",
                       description="Keys come from env vars (PCS_SIGN_ALG, PCS_HMAC_KEY, "
                       "PCS_HMAC_KEYS, PCS_ED25519_PUB_B64, PCS_ED25519_PUBS_B64, TOKEN_RATE) or, "
                       "with --deployment, from that Deployment's container env and Secrets, "
                       "reloaded when its pod template changes.")
    b.add_argument("--listen", default="127.0.0.1:8088", help="host:port (port 0 = any free)")
    b.add_argument("--profile", default="python", help="canonical profile to verify under")
    b.add_argument("--max-skew", type=_seconds, default=None, metavar="SECONDS",
                   help="freshness: reject sent_at further than this from the backend clock")
    b.add_argument("--clock-offset", type=float, default=0.0, metavar="SECONDS",
                   help="run the backend clock this far off (simulates a wrong backend clock)")
    b.add_argument("--signature-error-metric", default="flk_signature_err", metavar="NAME")
    b.add_argument("--dedup-ttl", type=_seconds, default=14 * 86400.0, metavar="DURATION")
    b.add_argument("--samples-max", type=int, default=1000, metavar="N")
    b.add_argument("--max-body", type=int, default=64 * 1024, metavar="BYTES")
    b.add_argument("--wal-dir", default=None, metavar="DIR",
                   help="append every request body to DIR/inbox-YYYYMMDD.wal before verifying "
                        "it, as upstream does (default: WAL_DIR if set, else no WAL)")
    b.add_argument("--no-samples-endpoint", action="store_true",
                   help="no /v1/samples/failures (upstream has none): diagnosis must use the "
                        "logs and the WAL")
    b.add_argument("--single-key", action="store_true",
                   help="verify with PCS_HMAC_KEY / PCS_ED25519_PUB_B64 only and ignore "
                        "PCS_HMAC_KEYS / PCS_ED25519_PUBS_B64, as the upstream Go server does")
    b.add_argument("--sign-alg", default=None, help="overrides PCS_SIGN_ALG (hmac|ed25519)")
    b.add_argument("--token-rate", default=None, help="overrides TOKEN_RATE (requests/s)")
    b.add_argument("--ed25519-pub-b64", default=None, help="overrides PCS_ED25519_PUB_B64")
    b.add_argument("--kubeconfig", default=None, help="default: KUBECONFIG or in-cluster")
    b.add_argument("--namespace", default="fractal-lba")
    b.add_argument("--deployment", default=None,
                   help="read config from this Deployment (e.g. fractal-lba-backend)")
    b.add_argument("--container", default=None, help="container name (default: the first)")
    b.add_argument("--poll-interval", type=float, default=0.5, metavar="SECONDS")
    b.add_argument("--shutdown-delay", type=_seconds, default=2.0, metavar="SECONDS",
                   help="on SIGTERM, keep answering this long while reporting not ready and "
                   "closing connections, then finish the requests in flight and exit")
    b.set_defaults(func=_backend)

    g = sub.add_parser("agents", parents=[common],
                       help="submit signed PCS at a rate, with injected faults",
                       description="Faults: old-key, new-key-early, skew:SECONDS, profile:go, "
                       "profile:fixed9, tamper[:FIELD], wrong-key, malformed, replay. Key specs: "
                       "file:PATH (keyring entry or keyring), env:VAR, secret:NS/NAME/KEY.")
    g.add_argument("--url", required=True, help="backend base URL, e.g. http://127.0.0.1:8088")
    g.add_argument("--rate", type=float, default=10.0, help="requests/s (0 = as fast as possible)")
    g.add_argument("--duration", type=_seconds, default=None, metavar="SECONDS")
    g.add_argument("--count", type=int, default=None)
    g.add_argument("--agents", type=int, default=3, help="number of agent ids (X-Agent-Id)")
    g.add_argument("--agent-prefix", default="agent")
    g.add_argument("--workers", type=int, default=8)
    g.add_argument("--timeout", type=float, default=5.0)
    g.add_argument("--key", default=None, metavar="SPEC", help="the agents' signing key")
    g.add_argument("--key-file", default=None, help="same as --key file:PATH")
    g.add_argument("--key-env", default=None, metavar="VAR", help="same as --key env:VAR")
    g.add_argument("--secret", default=None, metavar="NS/NAME/KEY",
                   help="same as --key secret:NS/NAME/KEY (re-read every second)")
    g.add_argument("--alg", default="hmac", choices=("hmac", "hmac-sha256", "ed25519"),
                   help="algorithm of env and secret key values")
    g.add_argument("--old-key", default=None, metavar="SPEC", help="key for fault old-key")
    g.add_argument("--new-key", default=None, metavar="SPEC", help="key for new-key-early")
    g.add_argument("--fault", type=_fault, action="append", help="repeatable")
    g.add_argument("--fault-fraction", type=float, default=1.0)
    g.add_argument("--profile", default="python", help="the agents' canonical profile")
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--clock-offset", type=float, default=0.0, metavar="SECONDS",
                   help="every agent clock this far off")
    g.add_argument("--kubeconfig", default=None)
    g.set_defaults(func=_agents)

    r = sub.add_parser("rules", parents=[common],
                       help="print the FLKSignatureFailuresSpike rule file (YAML)")
    r.add_argument("--metric", default="flk_signature_err")
    r.add_argument("--window", default="5m")
    r.add_argument("--for", default="5m")
    r.add_argument("--threshold", type=float, default=10.0)
    r.add_argument("--runbook-url", default=RUNBOOK_URL)
    r.add_argument("-o", "--output", default=None, help="write here instead of stdout")
    r.set_defaults(func=_rules)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``sigops testbed``; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as e:  # --help (0) or a usage error (2)
        return int(e.code or 0) if isinstance(e.code, int) else EXIT_USAGE
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        rc: int = args.func(args)
    except _Usage as e:
        sys.stderr.write(f"sigops testbed: {e}\n")
        return EXIT_USAGE
    return rc
