"""Connecting to Kubernetes exactly as any client does: a kubeconfig, or the pod's
service account in-cluster. I/O."""

from __future__ import annotations

import os

from kubernetes import client, config

from controller.settings import KubernetesSettings


class KubeConfigError(Exception):
    """No usable way to reach the API server; the message says what was tried."""


def api_client(settings: KubernetesSettings) -> client.ApiClient:
    """An ApiClient from settings: an explicit kubeconfig, in-cluster, or the default."""
    try:
        if settings.kubeconfig is not None:
            api: client.ApiClient = config.new_client_from_config(
                config_file=str(settings.kubeconfig), context=settings.context)
            return api
        if "KUBERNETES_SERVICE_HOST" in os.environ:
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)
            return client.ApiClient(configuration)
        default: client.ApiClient = config.new_client_from_config(context=settings.context)
        return default
    except (config.ConfigException, OSError, TypeError) as err:
        where = settings.kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        raise KubeConfigError(f"cannot load Kubernetes configuration from {where}: {err}") \
            from err


def current_user(api: client.ApiClient) -> str:
    """Who the API server thinks we are (for the audit trail of CLI commands)."""
    review = client.AuthenticationV1Api(api).create_self_subject_review(
        client.V1SelfSubjectReview(), _request_timeout=10)
    info = review.status.user_info if review.status else None
    return (info.username if info and info.username else None) or "unknown"
