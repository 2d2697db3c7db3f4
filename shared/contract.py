"""The gRPC contract (naila.v1), re-exported from the generated stubs in shared/gen.

Import ``pb`` for messages and ``pb_grpc`` for the service stubs; regenerate with
``python proto/generate.py``.
"""

from typing import Final

from shared.gen.naila.v1 import naila_pb2 as pb
from shared.gen.naila.v1 import naila_pb2_grpc as pb_grpc

# Household.SetTimer's bounds, one home for both ends: the hub refuses a bad form with a 400 before
# the call, the AI server refuses the call itself (INVALID_ARGUMENT) and its timers keep the ceiling.
TIMER_MAX_S: Final = 24 * 3600
TIMER_LABEL_MAX: Final = 60

__all__ = ["TIMER_LABEL_MAX", "TIMER_MAX_S", "pb", "pb_grpc"]
