"""The admin panel's view and edit of a pool's desired state (the same validation as
``SetDesiredState``)."""

from __future__ import annotations

import json

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from google.protobuf import json_format

from paddler.balancer.rollout import Rollout
from paddler.balancer.state_store import StateStore
from paddler.common.errors import InvalidArgumentError, PaddlerError, ResourceExhaustedError
from paddler.common.pool_names import check_pool_name
from paddler.v1 import desired_state_pb2
from paddler.web.pages import as_dict, error_response, refused


def add_state_routes(app: FastAPI, states: StateStore, rollout: Rollout) -> None:
    """``GET`` and ``PUT /api/state?pool=NAME``."""

    @app.get("/api/state")
    async def get_state(pool: str = "") -> JSONResponse:
        """A pool's desired state ("": "default"), its version and epoch (version 0: none
        set), its aliases and its rollout."""
        try:
            name = check_pool_name(pool, "pool")
        except InvalidArgumentError as error:
            return refused(error.violations[0].field, error.message)
        described = as_dict(states.state_of(name))
        described.update(aliases=states.aliases_of(name), rollout=as_dict(rollout.progress(name)))
        return JSONResponse(described)

    @app.put("/api/state")
    async def put_state(request: Request, pool: str = "", aliases: str | None = None) -> Response:
        """Validate and set a pool's new desired state (``aliases``, comma-separated, replace
        the pool's when given); 400 names the field to fix."""
        try:
            body = await request.json()
            if not isinstance(body, dict):
                return refused(None, "the body is not a desired state: send a JSON object")
            state = json_format.ParseDict(body, desired_state_pb2.DesiredState())
            names = None if aliases is None else [a.strip() for a in aliases.split(",")]
            stored = await states.submit(state, pool, names and [a for a in names if a])
            return JSONResponse(as_dict(stored))
        except (json.JSONDecodeError, json_format.ParseError) as error:
            return refused(None, f"the body is not a desired state: {error}")
        except RecursionError:
            return refused(None, "the body is not a desired state: it nests too deeply")
        except InvalidArgumentError as error:
            return refused(error.violations[0].field, error.message)
        except ResourceExhaustedError as error:  # too many pools
            return error_response(429, error.message)
        except PaddlerError as error:  # the state file could not be written, say
            return error_response(500, error.message)
