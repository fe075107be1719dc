"""Typed FastAPI dependencies: the container's services and the authenticated actor."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer

from banking.container import Container
from banking.domain.errors import Unauthenticated
from banking.domain.roles import Actor
from banking.observability import context

_bearer = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)


# Dependencies are ``async def`` on purpose: FastAPI runs a plain ``def`` in a worker thread,
# which costs a thread hop per request and loses the log context bound inside it.
async def get_container(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


ContainerDep = Annotated[Container, Depends(get_container)]


async def get_actor(
    container: ContainerDep, token: Annotated[str | None, Depends(_bearer)]
) -> Actor:
    if not token:
        raise Unauthenticated("missing bearer token")
    actor = await container.tokens.authenticate(token)
    context.bind(user_id=str(actor.user_id))
    return actor


CurrentActor = Annotated[Actor, Depends(get_actor)]


def trace_id_of(request: Request) -> str | None:
    trace_id: str | None = request.scope.get("state", {}).get("trace_id")
    return trace_id
