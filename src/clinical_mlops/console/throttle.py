"""Sign-in throttling: exponential backoff per client address and per user name, no lock-out.

Failed sign-ins are counted three ways: per client address (whatever names it tried),
per user name (from whichever address) and per address-and-name pair. Unknown names
are counted like known ones, so the throttle does not reveal who exists.

- **Per address.** After :attr:`LoginThrottle.free` failures, an address must wait
  ``base * 2**(failures - free)`` seconds (at most ``cap``) after its last failure
  before its next attempt is checked. Trying many names from one address is slowed
  as much as trying many passwords for one name.
- **Per name.** Once a name has ``free`` failures, an address that has itself failed
  for that name waits ``base * 2**(name failures - free)`` seconds (at most ``cap``)
  after its own last failure for it. An address that has not failed for the name is
  not held back: someone guessing a clinician's password from elsewhere cannot lock
  the clinician out of their own workstation, which no fixed lock-out of the name
  can promise.

An attempt made while waiting is refused without checking the password (so the
refusal says nothing about it) and is not counted. A success forgets the
address-and-name pair, never the address: an attacker holding one valid account
cannot reset their address's count by signing in with it. Counts are forgotten
``forget`` seconds after their last failure, and at most ``capacity`` of each kind
are kept (the least recently failed are dropped first), so memory stays bounded.

The counts live in the memory of one console process; with several processes each
counts its own (docs/CONSOLE.md). The client address is the one the server sees:
behind a reverse proxy, let the server trust the proxy's ``X-Forwarded-For``
(``FORWARDED_ALLOW_IPS``, read by uvicorn), or every client shares the proxy's address.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict

from clinical_mlops.clock import Clock
from clinical_mlops.errors import SignInThrottled

__all__ = ["LoginThrottle"]


class _Counts:
    """Failure counts with the time of the last failure, oldest-failed dropped beyond capacity."""

    def __init__(self, capacity: int, forget: float) -> None:
        self.capacity, self.forget = capacity, forget
        self._items: OrderedDict[tuple[str, ...], tuple[int, float]] = OrderedDict()

    def get(self, key: tuple[str, ...], now: float) -> tuple[int, float]:
        found = self._items.get(key)
        if found is None:
            return 0, -math.inf
        if now - found[1] > self.forget:
            del self._items[key]
            return 0, -math.inf
        return found

    def add(self, key: tuple[str, ...], now: float) -> None:
        n, _ = self.get(key, now)
        self._items[key] = (n + 1, now)
        self._items.move_to_end(key)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def drop(self, key: tuple[str, ...]) -> None:
        self._items.pop(key, None)

    def __len__(self) -> int:
        return len(self._items)


class LoginThrottle:
    """Slows password guessing per client address and per user name (see the module docstring)."""

    def __init__(
        self,
        clock: Clock,
        *,
        free: int = 5,
        base: float = 1.0,
        cap: float = 900.0,
        forget: float = 86400.0,
        capacity: int = 10_000,
    ):
        self.clock = clock
        self.free, self.base, self.cap = free, base, cap
        self._address = _Counts(capacity, forget)
        self._name = _Counts(capacity, forget)
        self._pair = _Counts(capacity, forget)
        self._lock = threading.Lock()

    def _delay(self, failures: int) -> float:
        """Return the wait after ``failures`` failures (0 while within the free allowance)."""
        if failures < self.free:
            return 0.0
        return float(min(self.base * 2.0 ** min(failures - self.free, 64), self.cap))

    def check(self, name: str, address: str) -> None:
        """Return when ``address`` may try ``name`` now; raise ``SignInThrottled`` otherwise."""
        now = self.clock.now().timestamp()
        with self._lock:
            failures, last = self._address.get((address,), now)
            wait = self._delay(failures) - (now - last)
            if wait > 0:
                raise SignInThrottled(
                    f"Too many failed sign-ins from this address; try again in {_words(wait)}. "
                    "The password was not checked.",
                    retry_after=math.ceil(wait),
                )
            pair, pair_last = self._pair.get((address, name), now)
            if pair:
                failures, _ = self._name.get((name,), now)
                wait = self._delay(failures) - (now - pair_last)
                if wait > 0:
                    raise SignInThrottled(
                        "Too many failed sign-ins for this user name from this address; try "
                        f"again in {_words(wait)}. The password was not checked.",
                        retry_after=math.ceil(wait),
                    )

    def failed(self, name: str, address: str) -> None:
        """Count one failed sign-in of ``name`` from ``address``."""
        now = self.clock.now().timestamp()
        with self._lock:
            self._address.add((address,), now)
            self._name.add((name,), now)
            self._pair.add((address, name), now)

    def succeeded(self, name: str, address: str) -> None:
        """Forget the failures of ``name`` from ``address`` (the address keeps its own count)."""
        with self._lock:
            self._pair.drop((address, name))

    def tracked(self) -> dict[str, int]:
        """Return how many addresses, names and pairs have failures remembered."""
        with self._lock:
            return {
                "addresses": len(self._address),
                "names": len(self._name),
                "pairs": len(self._pair),
            }


def _words(seconds: float) -> str:
    s = math.ceil(seconds)
    if s < 120:
        return f"{s} second{'' if s == 1 else 's'}"
    m = math.ceil(s / 60)
    return f"{m} minutes"
