"""Typed application state: what the composition root hands to handlers."""

from aiohttp import web

from stablemirror.services.protocol import RegistryService

REGISTRY = web.AppKey("registry", RegistryService)
