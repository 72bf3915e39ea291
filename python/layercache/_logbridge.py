"""The C++ library's messages, delivered to Python's ``logging`` module.

Every message of the C++ core (a corrupt entry removed, a write that failed, a
download retried, with ``LAYERCACHE_LOG=debug`` each download) becomes a record
of the ``logging.getLogger("layercache")`` logger, at the matching level (debug
-> DEBUG, info -> INFO, warn -> WARNING, error -> ERROR). The C++ side only
queues a message (so no thread of the cache ever waits for the GIL); a daemon
thread emits the queued records; ``flush_logs()`` waits until they are emitted.

Which messages the core produces is its level: ``LAYERCACHE_LOG`` (debug, info,
warn, error or off; default warn; any other value makes ``import layercache``
fail with ValueError) or ``set_log_level()``. When ``LAYERCACHE_LOG`` is set and
the "layercache" logger has no level of its own, the logger gets that level.
With no logging handler configured anywhere, records are printed to stderr as
the C++ library prints them ("layercache warning: ...") rather than dropped.
"""

import atexit
import logging
import os
import sys
import threading

from . import _core

logger = logging.getLogger("layercache")

# C++ LogLevel (kDebug=0 .. kError=3) -> logging level.
_TO_LOGGING = {0: logging.DEBUG, 1: logging.INFO, 2: logging.WARNING, 3: logging.ERROR}
_NAMES = {0: "debug", 1: "info", 2: "warning", 3: "error"}
_FROM_LOGGING = [(logging.ERROR, "error"), (logging.WARNING, "warn"), (logging.INFO, "info"),
                 (logging.DEBUG, "debug")]

_lock = threading.Lock()
_thread = None
_closed = False


def _emit(records):
    for level, message in records:
        lvl = _TO_LOGGING.get(level, logging.ERROR)
        if logger.hasHandlers():
            logger.log(lvl, message)
        else:
            # No handler anywhere (logging's last resort would drop anything
            # below WARNING): print what the core's level let through, as the
            # C++ library does.
            try:
                sys.stderr.write(f"layercache {_NAMES.get(level, 'error')}: {message}\n")
            except Exception:  # pragma: no cover - stderr closed
                pass


def _run():
    while True:
        batch = _core.log.wait(1.0)
        if batch is None:
            return
        try:
            _emit(batch)
        except Exception:  # pragma: no cover - a handler that raises must not stop the bridge
            pass
        finally:
            _core.log.done(len(batch))


def _start():
    global _thread
    with _lock:
        if _closed or (_thread is not None and _thread.is_alive()):
            return
        _core.log.install()
        _thread = threading.Thread(target=_run, name="layercache-log", daemon=True)
        _thread.start()


def _shutdown():
    """atexit: emit what is queued, then route later messages (those of caches
    destroyed during interpreter teardown) to stderr, never to Python."""
    global _closed
    with _lock:
        _closed = True
        thread = _thread
    _core.log.uninstall()
    _core.log.close()
    if thread is not None and thread is not threading.current_thread():
        thread.join(timeout=10)


def _after_fork_in_child():
    global _thread, _closed
    # The parent's drain thread does not exist here; the C++ side has a fresh queue.
    _thread = None
    if not _closed:
        _start()


def flush_logs(timeout=10.0):
    """Waits until every message the C++ core logged before the call has been
    emitted to ``logging`` (from any thread). Returns False on timeout."""
    thread = _thread
    if thread is None or thread is threading.current_thread() or not thread.is_alive():
        return True
    return bool(_core.log.flush(float(timeout)))


def set_log_level(level):
    """Sets which messages the C++ core produces: "debug", "info", "warn"/"warning",
    "error", "off", or a ``logging`` level number (DEBUG, INFO, WARNING, ERROR; above
    ERROR is "off"). Applies to this process. Anything else is a ValueError. The
    "layercache" logger follows it unless the application gave the logger a level."""
    if isinstance(level, bool) or not isinstance(level, (int, str)):
        raise ValueError(f"log level {level!r}: use debug, info, warn, error, off or a logging level")
    if isinstance(level, int):
        name = "off"
        for number, n in reversed(_FROM_LOGGING):
            if level <= number:
                name = n
                break
        level = name
    _core.log.set_level(level)
    _follow_level(_core.log.parse_level(level))


_level_set_here = False


def _follow_level(level):
    """Gives the "layercache" logger the core's level unless the application set one."""
    global _level_set_here
    if (logger.level == logging.NOTSET or _level_set_here) and level in _TO_LOGGING:
        logger.setLevel(_TO_LOGGING[level])
        _level_set_here = True


def get_log_level():
    """The C++ core's level: "debug", "info", "warning", "error" or "off"."""
    return _core.log.get_level()


def _check_environment():
    value = os.environ.get("LAYERCACHE_LOG")
    if not value:
        return
    try:
        level = _core.log.parse_level(value)
    except ValueError as e:
        raise ValueError(f"LAYERCACHE_LOG={value!r}: {e}") from None
    _follow_level(level)


_check_environment()
_start()
atexit.register(_shutdown)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
