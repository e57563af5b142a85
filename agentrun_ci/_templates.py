"""Templates: the interpreter (a CodeInterpreter template) one facade created or attached.

A created template is owner-tagged and recorded with the tracker, so a crash never
leaks it; an attached one is never deleted by us; `keep_interpreter=True` makes a
created one outlive the facade under the name given.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Mapping

from ._backend import Backend
from ._errors import AgentRunError, InvalidArgumentError
from ._models import Template
from ._options import InterpreterOptions
from ._ownership import OwnerTag

__all__ = ["NetworkMode", "Templates"]


class NetworkMode(str, enum.Enum):
    """A template's network mode (the seed's `NetworkMode.PUBLIC`)."""

    PUBLIC = "PUBLIC"
    PRIVATE = "PRIVATE"
    PUBLIC_AND_PRIVATE = "PUBLIC_AND_PRIVATE"

    def __str__(self) -> str:
        return self.value


def network_mode_value(network_mode: str | NetworkMode) -> str:
    """The wire value of a network mode; InvalidArgumentError for an unknown one."""
    mode = str(network_mode.value if isinstance(network_mode, NetworkMode) else network_mode)
    if mode not in {m.value for m in NetworkMode}:
        raise InvalidArgumentError(
            f"unknown network_mode {network_mode!r}: use one of {[m.value for m in NetworkMode]}"
        )
    return mode


class Templates:
    """Create, attach and delete the one template a facade runs its sessions from."""

    def __init__(self, backend: Backend, options: InterpreterOptions, tag: OwnerTag) -> None:
        self._backend = backend
        self._options = options
        self._tag = tag
        self.template: Template | None = None
        self.owned = False

    async def create(
        self,
        name: str | None,
        *,
        cpu: float,
        memory: int,
        disk: int,
        network_mode: str | NetworkMode | None,
        idle_timeout: float,
        ttl: float,
        env: Mapping[str, str] | None,
        timeout: float | None,
    ) -> Template:
        """Create a template and wait until READY; a failed create deletes the half-made one."""
        if self.template is not None:
            raise AgentRunError(
                f"this object already has interpreter {self.template.name!r}; use another "
                "CodeInterpreter for a second one"
            )
        mode = None if network_mode is None else network_mode_value(network_mode)
        keep = self._options.keep_interpreter
        template_name = name if keep and name else self._tag.new_name(name or "interpreter")
        control, tracker = self._backend.control, self._backend.tracker
        assert control is not None
        assert tracker is not None
        tracker.add_template(template_name)
        try:
            await control.create_template(
                template_name,
                cpu=cpu,
                memory=memory,
                disk_size=disk,
                network_mode=mode,
                idle_timeout=idle_timeout,
                ttl=ttl,
                environment=dict(env) if env else None,
                description=self._tag.description({"name": name, "keep": keep}),
                **self._options.template_fields,
            )
            template = await control.wait_template_ready(
                template_name, timeout=timeout or self._options.ready_timeout
            )
        except BaseException:
            with contextlib.suppress(AgentRunError):
                await control.delete_template(template_name)
            tracker.discard_template(template_name)
            raise
        if keep:
            tracker.discard_template(template_name)  # outlives us, also on a crash
        self.template = template
        self.owned = True
        return template

    async def attach(self, name: str) -> Template:
        """Use an existing template (waits until READY); never deleted by us."""
        assert self._backend.control is not None
        self.template = await self._backend.control.wait_template_ready(
            name, timeout=self._options.ready_timeout
        )
        self.owned = False
        return self.template

    async def delete(self, *, keep: bool = False) -> None:
        """Forget the template; delete it if we created it (and `keep` is false)."""
        template, self.template = self.template, None
        control, tracker = self._backend.control, self._backend.tracker
        if template is None or not self.owned or keep or control is None:
            return
        await control.delete_template(template.name)
        if tracker is not None:
            tracker.discard_template(template.name)
