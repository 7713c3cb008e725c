"""A local MLMD gRPC service for tests: the real ``MetadataStoreService`` protocol, served
by Python's grpc on 127.0.0.1 and answered by MLMD's own C++ store on a SQLite file.

Test helper, I/O. It stands in for Kubeflow's ``metadata-grpc-service`` (whose server
binary no Python package ships), so the ``grpc`` backend is exercised over a real
channel, and an outage is a real one: ``stop()`` closes the port, ``start()`` reopens it.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]
import ml_metadata.proto.metadata_store_pb2 as _pb2
import ml_metadata.proto.metadata_store_service_pb2 as _service_pb2
from ml_metadata.metadata_store.pywrap.metadata_store_extension import (  # type: ignore[import-not-found,unused-ignore]
    metadata_store as native,
)

pb: Any = _pb2
service_pb: Any = _service_pb2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MLMDGrpcServer:
    """``MetadataStoreService`` on ``127.0.0.1:port`` backed by a SQLite file."""

    def __init__(self, sqlite_path: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        config = pb.ConnectionConfig()
        config.sqlite.filename_uri = str(sqlite_path)
        config.sqlite.connection_mode = pb.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
        self._store = native.CreateMetadataStore(config.SerializeToString(),
                                                 pb.MigrationOptions().SerializeToString())
        self._lock = threading.Lock()
        self._server: Any = None
        self.calls = 0

    def _method(self, name: str) -> Callable[[bytes, Any], bytes]:
        call = getattr(native, name)

        def handle(request: bytes, context: Any) -> bytes:
            with self._lock:
                self.calls += 1
                response, error, code = call(self._store, request)
            if code != 0:
                status = next(s for s in grpc.StatusCode if s.value[0] == code)
                context.abort(status, error.decode("utf-8", "replace"))
            return bytes(response)

        return handle

    def start(self) -> None:
        service = service_pb.DESCRIPTOR.services_by_name["MetadataStoreService"]
        handlers = {m.name: grpc.unary_unary_rpc_method_handler(self._method(m.name))
                    for m in service.methods if hasattr(native, m.name)}
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service.full_name, handlers),))
        server.add_insecure_port(f"127.0.0.1:{self.port}")
        server.start()
        self._server = server

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None).wait(5)
            self._server = None
