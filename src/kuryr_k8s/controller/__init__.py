"""kuryr-controller: every pod gets a Neutron port, published in its KuryrPort.

Entry: ``kuryr controller`` (``cli/controller_cmd.py``) → :func:`build.load_config` and
:func:`build.build` → :class:`service.Controller`. Reconcile machinery in ``engine``;
reconcilers in ``pods`` and ``kuryrports``; port pools in ``pool``; garbage collection in
``gc``; settings in ``settings``. See ``docs/design/controller.md``.
"""
