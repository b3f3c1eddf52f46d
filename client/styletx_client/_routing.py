"""Key-affine routing: each request key goes to the same replica, so a re-attach finds its job.

A target that names several backends (an `ipv4:`/`ipv6:` address list, or a `dns:` name such as
a headless Service) gets one channel per address, and a call goes to the address that ranks first
for its request key by rendezvous (highest-random-weight) hashing. Every client that sees the same
addresses ranks them the same way, so a restarted client re-attaching with a stored key reaches the
replica that holds the job; when that replica is gone, the next address by rank takes the key, and
only the keys of the lost replica move. DNS names are resolved by the SDK (getaddrinfo), again on a
timer and soon after a connection failure, so new and departed replicas are noticed.
"""

from __future__ import annotations

import hashlib
import ipaddress
import itertools
import logging
import math
import socket
import threading
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeAlias, TypeVar

from .errors import CancelledError

logger = logging.getLogger(__name__)

Clock = Callable[[], float]
T = TypeVar("T")

RESOLVE_INTERVAL = 30.0
"""Seconds between DNS resolutions of a `dns:` target (checked when a call starts)."""
MIN_RESOLVE_INTERVAL = 1.0
"""After a connection failure the name is resolved again at once, but not more often than this."""
DOWN_FOR = 5.0
"""Seconds an address that refused a connection (or said it is draining) is passed over."""
DEFAULT_DNS_PORT = 443  # gRPC's default port for a dns: target without one


@dataclass(frozen=True, slots=True)
class SingleTarget:
    """One channel to the target as given; gRPC resolves and balances it."""

    target: str


@dataclass(frozen=True, slots=True)
class AddressList:
    """A fixed list of addresses (canonical `ip:port` / `[ip6]:port`), one channel each."""

    addresses: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DnsName:
    """A DNS name resolved by the SDK into addresses, one channel each."""

    host: str
    port: int

    @property
    def authority(self) -> str:
        """What the channels send as :authority and verify in a TLS certificate."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


TargetPlan: TypeAlias = SingleTarget | AddressList | DnsName


def plan_target(target: str, *, lb_policy: str | None) -> TargetPlan:
    """How a normalised target is reached. An explicit `lb_policy` opts out of key affinity."""
    scheme, _, rest = target.partition(":")
    scheme = scheme.lower()
    if lb_policy is not None:
        return SingleTarget(target)
    if scheme in ("ipv4", "ipv6") and "," in rest:
        return AddressList(tuple(_canonical(part, scheme) for part in rest.split(",")))
    if scheme == "dns":
        name = rest
        if name.startswith("//"):
            authority, _, name = name[2:].partition("/")
            if authority:
                # A custom DNS server, which getaddrinfo cannot ask: let gRPC resolve and balance.
                logger.warning("%s names a DNS server: no key-affine routing", target)
                return SingleTarget(target)
        host, port = _split_host_port(name)
        return DnsName(host, port)
    return SingleTarget(target)


def _split_host_port(hostport: str) -> tuple[str, int]:
    if hostport.startswith("["):
        host, _, tail = hostport[1:].partition("]")
        port = tail.removeprefix(":")
    elif hostport.count(":") == 1:
        host, port = hostport.split(":")
    else:
        host, port = hostport, ""
    if not host:
        raise ValueError(f"no host name in {hostport!r}")
    try:
        number = int(port) if port else DEFAULT_DNS_PORT
    except ValueError:
        raise ValueError(f"bad port in {hostport!r}") from None
    return host, number


def _canonical(address: str, scheme: str = "") -> str:
    """`ip:port` with the IP in its canonical text form (IPv6 in brackets)."""
    host, port = _split_host_port(address.strip())
    ip = ipaddress.ip_address(host)
    if scheme and f"ipv{ip.version}" != scheme:
        raise ValueError(f"{address!r} is not an {scheme} address")
    return f"[{ip.compressed}]:{port}" if ip.version == 6 else f"{ip.compressed}:{port}"


def channel_target(address: str) -> str:
    """The gRPC target of one canonical address (`ipv4:10.0.0.1:50051`, `ipv6:[::1]:50051`)."""
    return f"ipv6:{address}" if address.startswith("[") else f"ipv4:{address}"


def resolve(name: DnsName) -> list[str]:
    """The canonical addresses `name` resolves to now (blocking; OSError when it does not)."""
    infos = socket.getaddrinfo(name.host, name.port, type=socket.SOCK_STREAM)
    addresses: list[str] = []
    for family, _type, _proto, _canon, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        address = _canonical(f"[{sockaddr[0]!s}]:{name.port}")
        if address not in addresses:
            addresses.append(address)
    return addresses


def resolve_quietly(name: DnsName) -> list[str] | None:
    """`resolve`, logging a failure and returning None instead of raising."""
    try:
        return resolve(name)
    except (OSError, UnicodeError) as error:
        logger.warning("cannot resolve %s: %s", name.authority, error)
        return None


def _score(key: str, address: str) -> int:
    digest = hashlib.blake2b(f"{address}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def rendezvous_rank(key: str, addresses: Collection[str]) -> list[str]:
    """`addresses` in the order `key` prefers them (highest random weight first)."""
    return sorted(addresses, key=lambda address: (_score(key, address), address), reverse=True)


@dataclass(eq=False)
class Endpoint(Generic[T]):
    """One address and its connection; `address` is the routing identity."""

    address: str
    connection: T
    in_flight: int = 0
    retired: bool = False


@dataclass(frozen=True, slots=True)
class ChannelSpec:
    """What a transport needs to open one channel: a gRPC target and its channel arguments."""

    target: str
    authority: str | None = None


@dataclass
class _State(Generic[T]):
    live: dict[str, Endpoint[T]] = field(default_factory=dict)
    retired: list[Endpoint[T]] = field(default_factory=list)
    down_until: dict[str, float] = field(default_factory=dict)
    next_resolve: float = -math.inf
    last_resolve: float = -math.inf
    resolving: bool = False


class Router(Generic[T]):
    """Endpoints of one client and which one a call goes to; thread-safe, transport-neutral.

    `connect` opens a transport's connection (a channel and its stubs) for a `ChannelSpec`. A
    transport resolves DNS itself when `resolution_due()` says so (blocking or in a thread) and
    hands the answer to `resolved()`; connections returned by `resolved()` and `release()` belong
    to departed replicas whose last call has ended, and the transport closes them.
    """

    def __init__(
        self,
        plan: TargetPlan,
        connect: Callable[[ChannelSpec], T],
        clock: Clock,
        *,
        resolve_interval: float = RESOLVE_INTERVAL,
    ) -> None:
        self.plan = plan
        self._connect = connect
        self._clock = clock
        self._resolve_interval = resolve_interval
        self._lock = threading.Lock()
        self._state: _State[T] = _State()
        self._round_robin = itertools.count()
        self._closed = False
        self._fallback: Endpoint[T] | None = None
        if isinstance(plan, SingleTarget):
            self._fallback = Endpoint(plan.target, connect(ChannelSpec(plan.target)))
        elif isinstance(plan, AddressList):
            self._update(plan.addresses)
        else:
            # Used only while the name has never resolved: gRPC's own resolver then reports why.
            target = f"dns:///{plan.authority}"
            self._fallback = Endpoint(target, connect(ChannelSpec(target, plan.authority)))

    @property
    def addresses(self) -> list[str]:
        """The addresses calls are routed over now."""
        with self._lock:
            return list(self._state.live)

    def resolution_due(self) -> DnsName | None:
        """The name to resolve now (the caller must then call `resolved`), or None."""
        if not isinstance(self.plan, DnsName):
            return None
        with self._lock:
            state = self._state
            if self._closed or state.resolving or self._clock() < state.next_resolve:
                return None
            state.resolving = True
        return self.plan

    def resolved(self, addresses: Sequence[str] | None) -> list[T]:
        """Take a resolution's answer (None or empty: it failed; keep the old addresses)."""
        now = self._clock()
        with self._lock:
            state = self._state
            if self._closed:
                return []
            state.resolving = False
            state.last_resolve = now
            if not addresses:
                logger.warning(
                    "%s resolved to no address; keeping %d known",
                    self._describe(),
                    len(state.live),
                )
                state.next_resolve = now + MIN_RESOLVE_INTERVAL
                return self._closable()
            state.next_resolve = now + self._resolve_interval
            return self._update(addresses)

    def pick(
        self, key: str, *, avoid: Collection[str] = (), prefer: str | None = None
    ) -> Endpoint[T]:
        """The endpoint for a call with request key `key` (empty: round robin).

        `prefer` (the replica that already streamed this call's job) wins unless avoided; else
        the first address by rendezvous rank that is neither avoided nor recently down; when every
        address is, avoided ones still lose to down ones, and a call always gets an endpoint.
        """
        with self._lock:
            if self._closed:
                raise CancelledError("the client was closed")
            live = self._state.live
            if not live:
                assert self._fallback is not None  # only a DNS name before its first answer
                return self._take(self._fallback)
            if prefer is not None and prefer in live and prefer not in avoid:
                return self._take(live[prefer])
            if key:
                ranked = rendezvous_rank(key, live)
            else:
                start = next(self._round_robin) % len(live)
                names = list(live)
                ranked = names[start:] + names[:start]
            now = self._clock()
            up = [a for a in ranked if self._state.down_until.get(a, -math.inf) <= now]
            for candidates in (
                [a for a in up if a not in avoid],
                [a for a in ranked if a not in avoid],
                up,
                ranked,
            ):
                if candidates:
                    return self._take(live[candidates[0]])
            raise AssertionError("unreachable: live is not empty")

    def _take(self, endpoint: Endpoint[T]) -> Endpoint[T]:
        endpoint.in_flight += 1
        return endpoint

    def release(self, endpoint: Endpoint[T]) -> list[T]:
        """A call on `endpoint` ended; returns the connection if it is retired and now idle."""
        with self._lock:
            endpoint.in_flight -= 1
            return self._closable()

    def mark_down(self, address: str) -> None:
        """`address` refused a connection or is leaving: pass it over for DOWN_FOR seconds, and
        resolve the name again soon (its replica may have been replaced)."""
        with self._lock:
            state = self._state
            if address not in state.live:
                return
            state.down_until[address] = self._clock() + DOWN_FOR
            state.next_resolve = min(state.next_resolve, state.last_resolve + MIN_RESOLVE_INTERVAL)

    def close(self) -> list[T]:
        """Every connection, for the transport to close; the router is unusable afterwards."""
        with self._lock:
            endpoints = [*self._state.live.values(), *self._state.retired]
            if self._fallback is not None:
                endpoints.append(self._fallback)
            self._state = _State()
            self._fallback = None
            self._closed = True
            return [endpoint.connection for endpoint in endpoints]

    def _update(self, addresses: Sequence[str]) -> list[T]:
        """Open endpoints for new addresses, retire departed ones (lock held or constructing)."""
        state = self._state
        wanted = list(dict.fromkeys(addresses))
        for address in wanted:
            if address not in state.live:
                state.live[address] = Endpoint(address, self._connect(self._spec(address)))
        for address in [a for a in state.live if a not in wanted]:
            endpoint = state.live.pop(address)
            endpoint.retired = True
            state.retired.append(endpoint)
            state.down_until.pop(address, None)
        logger.debug("%s routes over %s", self._describe(), ", ".join(wanted))
        return self._closable()

    def _spec(self, address: str) -> ChannelSpec:
        authority = self.plan.authority if isinstance(self.plan, DnsName) else None
        return ChannelSpec(channel_target(address), authority)

    def _closable(self) -> list[T]:
        state = self._state
        idle = [e for e in state.retired if e.in_flight <= 0]
        state.retired = [e for e in state.retired if e.in_flight > 0]
        fallback = self._fallback
        resolved = isinstance(self.plan, DnsName) and bool(state.live)
        if resolved and fallback is not None and fallback.in_flight <= 0:
            idle.append(fallback)  # the name resolved: gRPC's own resolver is no longer needed
            self._fallback = None
        return [e.connection for e in idle]

    def _describe(self) -> str:
        if isinstance(self.plan, DnsName):
            return f"dns:///{self.plan.authority}"
        return "address list"
