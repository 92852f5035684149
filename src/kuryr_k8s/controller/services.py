"""The Service reconciler: a KuryrLoadBalancer for every Service that needs a load balancer.

For a key ``namespace/name`` (the Service's; EndpointSlice and KuryrLoadBalancer events
are routed to it), level-triggered:

* Service live and :func:`~kuryr_k8s.model.kuryrloadbalancer.handled` (a clusterIP and
  ports): the Service finalizer is set; a KuryrLoadBalancer of the same name, owned by the
  Service, has the spec :func:`~kuryr_k8s.model.kuryrloadbalancer.klb_spec` computes from
  the Service and its EndpointSlices; what Octavia cannot express is a Warning Event on the
  Service. A KuryrLoadBalancer left by an earlier Service of that name is deleted first.
* Service gone, being deleted, or no longer handled (headless, ExternalName): its
  KuryrLoadBalancer is deleted (the KuryrLoadBalancer reconciler removes the LB, then its
  own finalizer); once it is gone the Service finalizer is dropped.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from kuryr_k8s.controller import logs
from kuryr_k8s.controller.engine import Result
from kuryr_k8s.controller.finalizers import add_finalizer, finalizers_of, remove_finalizer
from kuryr_k8s.controller.kuryrports import EventSink
from kuryr_k8s.k8s import objects
from kuryr_k8s.k8s.client import KubeClient
from kuryr_k8s.k8s.errors import AlreadyExists, NotFound
from kuryr_k8s.k8s.informer import Store
from kuryr_k8s.k8s.objects import Obj
from kuryr_k8s.k8s.resources import KURYRLOADBALANCERS, SERVICES
from kuryr_k8s.model import kuryrloadbalancer as klb_model
from kuryr_k8s.model.errors import ResourceNotReady

LOG = logging.getLogger(__name__)

SLICES_BY_SERVICE = "service"
"""Index of the EndpointSlice store: ``namespace/<kubernetes.io/service-name>``."""


def slice_service_key(eps: Obj) -> list[str]:
    """The EndpointSlice store indexer: the key of the Service the slice belongs to."""
    svc = objects.labels(eps).get(klb_model.SERVICE_NAME_LABEL)
    return [f"{objects.namespace(eps)}/{svc}"] if svc else []


def klb_for(service: Obj, spec: dict[str, Any]) -> Obj:
    return {
        "apiVersion": klb_model.API_VERSION,
        "kind": klb_model.KIND,
        "metadata": {
            "name": objects.name(service),
            "namespace": objects.namespace(service),
            "finalizers": [klb_model.KLB_FINALIZER],
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "name": objects.name(service),
                    "uid": objects.uid(service),
                }
            ],
        },
        "spec": spec,
    }


def owner_uid(klb: Obj) -> str:
    for ref in objects.meta(klb).get("ownerReferences") or []:
        if ref.get("kind") == "Service":
            return str(ref.get("uid") or "")
    return ""


class ServiceReconciler:
    kind = "service"

    def __init__(
        self,
        client: KubeClient,
        services: Store,
        slices: Store,
        klbs: Store,
        settings: klb_model.ServiceLbSettings,
        events: EventSink,
    ) -> None:
        self._client = client
        self._services = services
        self._slices = slices
        self._klbs = klbs
        self._settings = settings
        self._events = events

    async def reconcile(self, key: str) -> Result:
        logs.bind(pod=f"svc:{key}", port="-")
        svc = self._services.get(key)
        klb = self._klbs.get(key)
        ours = svc is not None and klb_model.SERVICE_FINALIZER in finalizers_of(svc)
        if svc is None or objects.is_deleting(svc) or not klb_model.handled(svc):
            if klb is not None:
                await self._delete_klb(klb)
                return Result()
            if svc is not None and ours:
                await self._drop_finalizer(svc)
            return Result()
        if klb is not None and owner_uid(klb) != objects.uid(svc):
            LOG.info("KuryrLoadBalancer %s belongs to an earlier Service: deleting it", key)
            await self._delete_klb(klb)
            return Result()
        if not ours:
            svc = await add_finalizer(self._client, SERVICES, svc, klb_model.SERVICE_FINALIZER)
        slices = self._slices.by_index(SLICES_BY_SERVICE, key)
        spec, warnings = klb_model.klb_spec(svc, slices, self._settings)
        for warning in warnings:
            await self._events.emit(svc, "UnsupportedServiceFeature", warning, type="Warning")
        if klb is None:
            try:
                await self._client.create(
                    KURYRLOADBALANCERS, klb_for(svc, spec), objects.namespace(svc)
                )
                LOG.info("created KuryrLoadBalancer")
            except AlreadyExists:
                pass  # our cache is behind; its event brings us back
            except NotFound as exc:  # the CRD was removed; the GC loop installs it again
                raise ResourceNotReady(f"cannot create the KuryrLoadBalancer: {exc}") from exc
            return Result()
        if klb.get("spec") != spec:
            old = klb.get("spec") or {}
            patch = {"spec": {**{k: None for k in old if k not in spec}, **spec}}
            await self._client.patch(
                KURYRLOADBALANCERS, objects.name(klb), patch, objects.namespace(klb)
            )
            LOG.info("updated the KuryrLoadBalancer spec")
        return Result()

    async def _delete_klb(self, klb: Obj) -> None:
        if objects.is_deleting(klb):
            return
        with contextlib.suppress(NotFound):
            await self._client.delete(
                KURYRLOADBALANCERS,
                objects.name(klb),
                objects.namespace(klb),
                precondition_uid=objects.uid(klb),
            )
            LOG.info("deleting KuryrLoadBalancer (the load balancer goes first)")

    async def _drop_finalizer(self, svc: Obj) -> None:
        with contextlib.suppress(NotFound):
            # The KuryrLoadBalancer may only be missing from our cache: ask the API.
            await self._client.get(KURYRLOADBALANCERS, objects.name(svc), objects.namespace(svc))
            return
        await remove_finalizer(self._client, SERVICES, svc, klb_model.SERVICE_FINALIZER)
        LOG.info("KuryrLoadBalancer gone: removed the Service finalizer")
