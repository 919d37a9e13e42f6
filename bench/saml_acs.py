"""SAML assertion consumer: validated signed assertions per second per core.

One SAML connection (``SamlConnector``, IdP metadata inline from the fake IdP
``tests.fakes.saml_idp.FakeSamlIdP``), the hub's replay cache (``StoreReplayCache`` on a
``MemoryStore``), and N distinct valid signed responses generated beforehand, each answering
its own AuthnRequest (``login_url`` made the request; generation is not measured). Measured:
``SamlConnector.handle_callback`` per response, i.e. the whole consumer -- size cap, base64,
the hardened pre-parse (``guard``), pysaml2 + xmlsec1 signature verification (and
decryption) in ``asyncio.to_thread``, the consumer's own checks, the replay cache, the
identity mapping.

Run on one event loop, sequentially (one response at a time) and with a bounded number in
flight (2, 4): xmlsec1 runs as a child process per signature (and per decryption), off the
loop, so wall throughput alone would flatter the figure. The per-core figure divides by the
CPU of this process (all its threads) PLUS the CPU of the xmlsec1 children
(``getrusage(RUSAGE_CHILDREN)``, deltas around the measured window).

Variants: ``both`` (Response and Assertion signed, the default), ``assertion`` (assertion
signed only), ``encrypted`` (both signed, the signed assertion encrypted to the SP's
certificate: AES-256-CBC + RSA-OAEP), ``response`` (response signed only, with
``want_assertions_signed: false``; not run by default).

Also printed, same run: the ``xmlsec1 --verify`` CLI on one response's signature (per
second, wall and child CPU), a bare ``xmlsec1 --version`` spawn, and ``cryptography``'s
RSA-2048 verify -- what the subprocess costs against the signature arithmetic itself.

Run from the repository root::

    .venv/bin/python -m bench.saml_acs                        # 300 responses per variant
    .venv/bin/python -m bench.saml_acs -n 100 --concurrency 1,2
    .venv/bin/python -m bench.saml_acs --variants both,encrypted,response

Nothing networked: no socket is opened (the fake IdP is in process; metadata is inline).
A benchmark, not a test: its numbers never decide a test run's pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata as pkg_metadata
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from connectors.base import CallbackRequest, LoginRequest
from connectors.registry import ConnectorContext
from connectors.saml import SamlConnector, guard
from connectors.saml._pysaml2 import saml2
from federation.errors import InvalidUpstreamResponse
from federation.hub import StoreReplayCache
from federation.settings import SamlConnectionSettings
from federation.stores.memory import MemoryStore

# The fake IdP (tests/fakes/saml_idp.py) is imported by name: it builds XML with lxml, which
# has no type stubs here, and `mypy --strict bench` would otherwise check it too.
_fake: Any = importlib.import_module("tests.fakes.saml_idp")
FakeSamlIdP: Any = _fake.FakeSamlIdP
SamlUser: Any = _fake.SamlUser

HUB = "https://hub.bench.test"
IDP_ENTITY = "https://idp.acme.test/saml"
CONNECTION = "acme-saml"
EMAIL = "alice@acme.test"
VALIDITY = 1800  # seconds: every pre-generated response stays valid through the run
VARIANTS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    # name: (description, connection settings, FakeSamlIdP.response overrides)
    "both": ("Response + Assertion signed", {}, {}),
    "assertion": ("Assertion signed only", {}, {"sign_response": False}),
    "encrypted": (
        "both signed, assertion encrypted (AES-256-CBC, RSA-OAEP)",
        {},
        {"encrypt_to": "SP"},
    ),
    "response": (
        "Response signed only (want_assertions_signed: false)",
        {"want_assertions_signed": False},
        {"sign_assertion": False},
    ),
}
DEFAULT_VARIANTS = "both,assertion,encrypted"


# --- counting the xmlsec1 runs pysaml2 makes ------------------------------------------------


class XmlsecMeter:
    """Wraps pysaml2's ``CryptoBackendXmlSec1._run_xmlsec`` (one xmlsec1 child process each):
    how many runs, and the wall time spent in them (temp file, spawn, wait), per thread."""

    def __init__(self) -> None:
        self.calls = 0
        self.ns = 0
        self.cpu_ns = 0  # CPU of the calling thread inside them (tempfile, fork/exec, wait)
        self._lock = threading.Lock()
        self._original: Any = None

    def install(self) -> None:
        backend = saml2.sigver.CryptoBackendXmlSec1
        self._original = original = backend._run_xmlsec
        meter = self

        def _run_xmlsec(self: Any, com_list: Any, extra_args: Any) -> Any:
            start, cpu = time.perf_counter_ns(), time.thread_time_ns()
            try:
                return original(self, com_list, extra_args)
            finally:
                spent, cpu = time.perf_counter_ns() - start, time.thread_time_ns() - cpu
                with meter._lock:
                    meter.calls += 1
                    meter.ns += spent
                    meter.cpu_ns += cpu

        backend._run_xmlsec = _run_xmlsec

    def uninstall(self) -> None:
        if self._original is not None:
            saml2.sigver.CryptoBackendXmlSec1._run_xmlsec = self._original
            self._original = None

    def snapshot(self) -> tuple[int, int, int]:
        with self._lock:
            return self.calls, self.ns, self.cpu_ns


# --- the rig --------------------------------------------------------------------------------


class ResettableReplay:
    """The hub's replay cache (``StoreReplayCache`` over a ``MemoryStore``); ``reset`` gives
    it a fresh store, so every measured pass can consume the same responses once."""

    def __init__(self) -> None:
        self.store = MemoryStore()
        self.cache = StoreReplayCache(self.store)

    def reset(self) -> None:
        self.store = MemoryStore()
        self.cache = StoreReplayCache(self.store)

    async def first_use(self, key: str, ttl: float) -> bool:
        return await self.cache.first_use(key, ttl)


@dataclass
class Message:
    request: CallbackRequest
    flow_state: dict[str, Any]
    size: int  # bytes of XML


@dataclass
class Rig:
    variant: str
    connector: SamlConnector
    replay: ResettableReplay
    messages: list[Message]
    generation_s: float


def connection_settings(idp: Any, overrides: dict[str, Any]) -> SamlConnectionSettings:
    return SamlConnectionSettings(
        type="saml",
        id=CONNECTION,
        idp_metadata_xml=idp.metadata_xml(),
        **overrides,
    )


async def build_rig(idp: Any, variant: str, count: int) -> Rig:
    _, connection, overrides = VARIANTS[variant]
    replay = ResettableReplay()
    connector = SamlConnector(
        "acme",
        connection_settings(idp, connection),
        ConnectorContext(hub_base_url=HUB, replay=replay),
    )
    if overrides.get("encrypt_to") == "SP":
        overrides = overrides | {"encrypt_to": connector.keys.cert_file.read_text()}
    start = time.perf_counter()
    messages: list[Message] = []
    for k in range(count):
        redirect = await connector.login_url(LoginRequest(connector.endpoints.acs_url, f"f{k}"))
        request_id = redirect.flow_state["request_id"]
        xml = await asyncio.to_thread(
            idp.response,
            acs_url=connector.endpoints.acs_url,
            sp_entity_id=connector.endpoints.entity_id,
            in_response_to=request_id,
            not_on_or_after=VALIDITY,
            confirmation_not_on_or_after=VALIDITY,
            **overrides,
        )
        form = idp.post_params(xml, f"f{k}")
        request = CallbackRequest(connector.endpoints.acs_url, form, "POST")
        messages.append(Message(request, dict(redirect.flow_state), len(xml)))
    return Rig(variant, connector, replay, messages, time.perf_counter() - start)


# --- one measured pass ------------------------------------------------------------------------


def _cpu() -> tuple[float, float]:
    """(this process: user+system of all threads, waited-for children: user+system)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


@dataclass
class Pass:
    variant: str
    concurrency: int
    done: int
    wall_s: float
    self_cpu_s: float
    child_cpu_s: float
    xmlsec_calls: int
    xmlsec_wall_s: float
    xmlsec_parent_cpu_s: float
    latencies_ns: list[int] = field(default_factory=list)

    @property
    def total_cpu_ms(self) -> float:
        return (self.self_cpu_s + self.child_cpu_s) / self.done * 1000

    @property
    def per_core(self) -> float:
        return 1000 / self.total_cpu_ms


async def consume(rig: Rig, message: Message) -> None:
    identity = await rig.connector.handle_callback(message.request, message.flow_state)
    if identity.email != EMAIL or identity.connection_id != CONNECTION:
        raise RuntimeError(f"unexpected identity: {identity!r}")


async def measure(
    rig: Rig, concurrency: int, meter: XmlsecMeter, max_seconds: float, warmup: int
) -> Pass:
    messages = rig.messages
    rig.replay.reset()
    for message in messages[:warmup]:  # this pass's own warm-up (then the cache is reset)
        await consume(rig, message)
    rig.replay.reset()
    gc.collect()
    queue: Iterator[Message] = iter(messages)
    latencies: list[int] = []
    deadline = time.perf_counter() + max_seconds

    async def worker() -> None:
        for message in queue:  # shared iterator: each worker takes the next response
            if time.perf_counter() > deadline:
                return
            start = time.perf_counter_ns()
            await consume(rig, message)
            latencies.append(time.perf_counter_ns() - start)

    calls, ns, parent = meter.snapshot()
    cpu_self, cpu_kids = _cpu()
    start = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())
    wall = time.perf_counter() - start
    cpu_self2, cpu_kids2 = _cpu()
    calls2, ns2, parent2 = meter.snapshot()
    await _check_replay_refused(rig, messages[0])
    return Pass(
        rig.variant,
        concurrency,
        len(latencies),
        wall,
        cpu_self2 - cpu_self,
        cpu_kids2 - cpu_kids,
        calls2 - calls,
        (ns2 - ns) / 1e9,
        (parent2 - parent) / 1e9,
        latencies,
    )


async def _check_replay_refused(rig: Rig, message: Message) -> None:
    """Outside the window: the replay cache really held (the same response again fails)."""
    try:
        await rig.connector.handle_callback(message.request, message.flow_state)
    except InvalidUpstreamResponse as exc:
        if "replay" not in exc.detail:
            raise
        return
    raise RuntimeError("a replayed response was accepted: the benchmark's cache is broken")


def guard_cost(rig: Rig) -> float:
    """µs per response of the pre-parse alone (decode_post + inspect), same responses."""
    cap = rig.connector.settings.max_response_bytes
    start = time.process_time()
    for message in rig.messages:
        xml = guard.decode_post(message.request.params["SAMLResponse"], cap)
        guard.inspect(xml, root="Response")
    return (time.process_time() - start) / len(rig.messages) * 1e6


# --- reference rates --------------------------------------------------------------------------


@dataclass
class Reference:
    name: str
    rate: float  # per second, wall, one at a time
    cpu_us: float  # CPU per operation (children's for a subprocess)


def _id_attrs() -> list[str]:
    samlp, saml = "urn:oasis:names:tc:SAML:2.0:protocol", "urn:oasis:names:tc:SAML:2.0:assertion"
    return ["--id-attr:ID", f"{samlp}:Response", "--id-attr:ID", f"{saml}:Assertion"]


def _subprocess_rate(
    command: list[str], seconds: float, limit: int, env: dict[str, str] | None = None
) -> Reference:
    count = 0
    _, kids = _cpu()
    start = time.perf_counter()
    while count < limit and (count < 5 or time.perf_counter() - start < seconds):
        done = subprocess.run(command, capture_output=True, check=False, timeout=30, env=env)
        if done.returncode != 0:
            raise RuntimeError(f"{command[:2]} failed: {done.stderr.decode(errors='replace')}")
        count += 1
    wall = time.perf_counter() - start
    _, kids2 = _cpu()
    return Reference(" ".join(command[:2]), count / wall, (kids2 - kids) / count * 1e6)


def references(idp: Any, seconds: float) -> list[Reference]:
    xml = idp.response(
        acs_url=f"{HUB}/callback/{CONNECTION}",
        sp_entity_id=f"{HUB}/saml/{CONNECTION}/metadata",
        in_response_to="_ref",
        sign_response=True,
        sign_assertion=False,
    )
    response_id = xml.split(b' ID="', 1)[1].split(b'"', 1)[0].decode()
    out: list[Reference] = []
    with tempfile.TemporaryDirectory(prefix="bench-saml-") as directory:
        doc = Path(directory) / "response.xml"
        doc.write_bytes(xml)
        verify = [
            "xmlsec1", "--verify", "--enabled-key-data", "raw-x509-cert",
            "--pubkey-cert-pem", str(idp.signing_key.cert_path), *_id_attrs(),
            "--node-id", response_id, str(doc),
        ]  # fmt: skip
        ref = _subprocess_rate(verify, seconds, 2000)
        ref.name = f"xmlsec1 --verify (CLI, one RSA-SHA256 signature, {len(xml) / 1024:.1f} KB)"
        out.append(ref)
        no_bundle = dict(os.environ, SSL_CERT_FILE=os.devnull, SSL_CERT_DIR=directory)
        ref = _subprocess_rate(verify, seconds, 2000, env=no_bundle)
        ref.name = "  the same, SSL_CERT_FILE=/dev/null (system CA bundle not loaded)"
        out.append(ref)
        ref = _subprocess_rate(["xmlsec1", "--version"], seconds, 2000)
        ref.name = "xmlsec1 --version (a bare spawn: exec, dynamic linking, exit)"
        out.append(ref)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    data = b"s" * 700  # about a canonicalized SignedInfo
    pkcs1, sha256 = padding.PKCS1v15(), hashes.SHA256()
    signature = key.sign(data, pkcs1, sha256)
    public = key.public_key()
    count, cpu, start = 0, time.process_time(), time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(50):
            public.verify(signature, data, pkcs1, sha256)
        count += 50
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    out.append(
        Reference("cryptography RSA-2048 verify (in process)", count / wall, cpu / count * 1e6)
    )
    return out


# --- report -------------------------------------------------------------------------------


def _version(command: list[str]) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=10)
        return done.stdout.strip() or done.stderr.strip()
    return "?"


def machine(loop: str) -> dict[str, str]:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    packages = ", ".join(
        f"{name} {pkg_metadata.version(name)}"
        for name in ("pysaml2", "cryptography", "defusedxml", "uvloop")
    )
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "xmlsec1": _version(["xmlsec1", "--version"]),
        "packages": packages,
        "loop": loop,
        "platform": platform.platform(),
    }


def _pct(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6


def report_pass(p: Pass) -> None:
    per = 1000 / p.done
    print(
        f"  in flight {p.concurrency}: {p.done} responses in {p.wall_s:5.2f} s"
        f" -> wall {p.done / p.wall_s:6.1f} /s"
        f" | CPU/resp: this process {p.self_cpu_s * per:5.2f} ms"
        f" + xmlsec1 children {p.child_cpu_s * per:5.2f} ms = {p.total_cpu_ms:5.2f} ms"
        f" -> {p.per_core:6.1f} /s per core"
    )
    print(
        f"               xmlsec1 runs/resp {p.xmlsec_calls / p.done:.2f},"
        f" wall in them {p.xmlsec_wall_s * per:5.2f} ms/resp"
        f" (this process's CPU launching them {p.xmlsec_parent_cpu_s * per:4.2f} ms);"
        f" latency p50 {statistics.median(p.latencies_ns) / 1e6:5.2f} ms,"
        f" p95 {_pct(p.latencies_ns, 0.95):5.2f} ms;"
        f" busy {(p.self_cpu_s + p.child_cpu_s) / p.wall_s * 100:4.0f} % of a core"
    )


def report_header(args: argparse.Namespace, refs: list[Reference]) -> None:
    print("machine")
    for k, v in machine(args.loop).items():
        print(f"  {k:<9} {v}")
    print(f"  command   python -m bench.saml_acs {' '.join(sys.argv[1:])}".rstrip())
    print()
    print("reference rates (one at a time; CPU: the child's for a subprocess)")
    for ref in refs:
        print(f"  {ref.name:<66} {ref.rate:>8,.0f} /s  CPU {ref.cpu_us:>7,.0f} µs")


# --- main -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench.saml_acs", description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--responses", type=int, default=300, help="per variant (300)")
    parser.add_argument(
        "--warmup", type=int, default=20, help="responses consumed before each pass (20)"
    )
    parser.add_argument(
        "--concurrency", default="1,2,4", help="responses in flight, comma-separated (1,2,4)"
    )
    parser.add_argument(
        "--variants",
        default=DEFAULT_VARIANTS,
        help=f"comma-separated, of {', '.join(VARIANTS)} ({DEFAULT_VARIANTS})",
    )
    parser.add_argument("--max-seconds", type=float, default=60.0, help="per pass (60)")
    parser.add_argument("--ref-seconds", type=float, default=2.0, help="per reference rate (2)")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = parser.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c]
    args.variants = [v for v in args.variants.split(",") if v]
    if not 1 <= args.responses <= 2000 or not 0 <= args.warmup <= args.responses:
        parser.error("--responses in 1..2000, --warmup in 0..responses")
    if not args.concurrency or any(not 1 <= c <= 16 for c in args.concurrency):
        parser.error("--concurrency: values in 1..16")
    if not args.variants or any(v not in VARIANTS for v in args.variants):
        parser.error(f"--variants: of {', '.join(VARIANTS)}")
    if not 0 < args.max_seconds <= 600 or not 0 < args.ref_seconds <= 30:
        parser.error("--max-seconds in (0, 600], --ref-seconds in (0, 30]")
    return args


async def amain(args: argparse.Namespace, idp: Any) -> None:
    meter = XmlsecMeter()
    meter.install()
    try:
        for variant in args.variants:
            rig = await build_rig(idp, variant, args.responses)
            try:
                sizes = [m.size for m in rig.messages]
                print()
                print(
                    f"variant {variant}: {VARIANTS[variant][0]}; {len(sizes)} distinct responses"
                    f" ({statistics.fmean(sizes) / 1024:.1f} KB XML), generated in"
                    f" {rig.generation_s:.1f} s (not measured)"
                )
                print(f"  guard pre-parse alone (decode + inspect): {guard_cost(rig):5.0f} µs CPU")
                for concurrency in args.concurrency:
                    warmup = args.warmup
                    report_pass(await measure(rig, concurrency, meter, args.max_seconds, warmup))
            finally:
                await rig.connector.aclose()
    finally:
        meter.uninstall()


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _stop)
    idp = FakeSamlIdP(
        IDP_ENTITY,
        users=[SamlUser("alice-123", email=EMAIL, name="Alice Martin", groups=("buyers",))],
    )
    try:
        report_header(args, references(idp, args.ref_seconds))
        if args.loop == "uvloop":
            import uvloop

            uvloop.run(amain(args, idp))
        else:
            asyncio.run(amain(args, idp))
    except KeyboardInterrupt:
        raise SystemExit("interrupted") from None
    finally:
        idp.close()


if __name__ == "__main__":
    main()
