"""The gRPC contract (naila.v1), re-exported from the generated stubs in shared/gen.

Import ``pb`` for messages and ``pb_grpc`` for the service stubs; regenerate with
``python proto/generate.py``.
"""

from shared.gen.naila.v1 import naila_pb2 as pb
from shared.gen.naila.v1 import naila_pb2_grpc as pb_grpc

__all__ = ["pb", "pb_grpc"]
