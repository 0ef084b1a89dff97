"""Process-level metrics; each service package defines its own next to its code."""

from prometheus_client import Counter, Gauge, Info

from sidegate import __version__
from sidegate.common import reloading

GRPC_ERRORS = Counter(
    "sidegate_grpc_errors_total",
    "Calls answered with a gRPC error status, by service and code",
    ["service", "code"],
)
READY = Gauge("sidegate_ready", "1 once config, policies and rate-limit rules are loaded")
# One reload metric for every component and trigger, defined next to the reloader that counts it.
RELOADS = reloading.RELOADS
BUILD_INFO = Info("sidegate_build", "The running sidegate's version")
BUILD_INFO.info({"version": __version__})
