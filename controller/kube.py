"""Connecting to Kubernetes exactly as any client does: a kubeconfig, or the pod's
service account in-cluster. I/O."""

from __future__ import annotations

import importlib.metadata
import os

from kubernetes import client, config

from controller.settings import KubernetesSettings


class KubeConfigError(Exception):
    """No usable way to reach the API server; the message says what was tried."""


def user_agent(identity: str | None = None) -> str:
    """``rollwise/<version> (<identity>)``: the API server's audit log then tells the
    replicas (and the CLI) apart, where every client used to say ``OpenAPI-Generator``."""
    try:
        version = importlib.metadata.version("rollwise")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return f"rollwise/{version}" + (f" ({identity})" if identity else "")


def api_client(settings: KubernetesSettings, identity: str | None = None) -> client.ApiClient:
    """An ApiClient from settings: an explicit kubeconfig, in-cluster, or the default; its
    User-Agent names ``identity`` (the replica) when given."""
    try:
        if settings.kubeconfig is not None:
            api: client.ApiClient = config.new_client_from_config(
                config_file=str(settings.kubeconfig), context=settings.context)
        elif "KUBERNETES_SERVICE_HOST" in os.environ:
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)
            api = client.ApiClient(configuration)
        else:
            api = config.new_client_from_config(context=settings.context)
    except (config.ConfigException, OSError, TypeError) as err:
        where = settings.kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        raise KubeConfigError(f"cannot load Kubernetes configuration from {where}: {err}") \
            from err
    api.user_agent = user_agent(identity)
    return api


def current_user(api: client.ApiClient) -> str:
    """Who the API server thinks we are (for the audit trail of CLI commands)."""
    review = client.AuthenticationV1Api(api).create_self_subject_review(
        client.V1SelfSubjectReview(), _request_timeout=10)
    info = review.status.user_info if review.status else None
    return (info.username if info and info.username else None) or "unknown"
