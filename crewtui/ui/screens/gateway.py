"""The gateway view (`g`): the model gateway's pools, one block each (widgets/gateway_pool.py), read again every
second from `runtime.gateway()`.

Per pool: requests and tokens per minute against their limits with sparklines of the last ten minutes, the
line (in flight, cap, queue, oldest wait), the current upstream pause, a hold for the daily budget, today's 429s
absorbed and spend against the budget. Without a gateway it says in one line how to get one. Escape, `q` or `g`
closes it. A failed read is said in the dialog, not in a toast a second. What the runtime sends (the URL, pool
names, reasons, errors) is foreign text: shown through `plain`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

from crewtui.api import RuntimeAPI
from crewtui.spend import GatewayInfo
from crewtui.ui.calls import FAILED, call_runtime
from crewtui.ui.format import DIM, RATE_BAD, plain
from crewtui.ui.widgets.gateway_pool import PoolBlock

REFRESH = 1.0  # seconds between reads of the gateway
NO_GATEWAY = "no model gateway: no pool in the crew file names a provider (see README, Model gateway)"


def summary_text(info: GatewayInfo) -> Text:
    """The dialog's first line: where the gateway listens, or how to turn it on."""
    if info.url is None:
        return Text(NO_GATEWAY, style="italic #e5c07b")
    out = Text("listening on ", style=DIM)
    out.append_text(plain(info.url, "bold"))
    out.append(" (loopback only)", style=DIM)
    if info.port_changed_from is not None:
        out.append(f" · port changed from {info.port_changed_from} (it was taken)", style="#e5c07b")
    n = len(info.pools)
    out.append(f" · {n} pool{'' if n == 1 else 's'}", style=DIM)
    out.append(" · ", style=DIM)
    out.append(
        f"{info.forbidden:,} request{'' if info.forbidden == 1 else 's'} refused for a bad token",
        style=RATE_BAD if info.forbidden else DIM,
    )
    return out


class GatewayScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,g", "close", "Close", id="gateway-close")]

    def __init__(self, runtime: RuntimeAPI) -> None:
        super().__init__()
        self.runtime = runtime
        self.info: GatewayInfo | None = None
        self._pools: list[str] = []  # the pool names shown, in order
        self._loading = False

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="gateway-dialog"):
            yield Label("Model gateway", classes="dialog-title")
            yield Static(Text("reading the gateway…", style=DIM), id="gateway-summary")
            yield VerticalScroll(id="gateway-pools", classes="dialog-body")
            yield Static(Text("escape closes · read again every second", style=DIM), classes="dialog-text")

    def on_mount(self) -> None:
        self.refresh_gateway()
        self.set_interval(REFRESH, self.refresh_gateway, name="gateway")

    def refresh_gateway(self) -> None:
        if not self._loading:  # a slow runtime: the next tick waits for this read rather than cancel it
            self._loading = True
            self._load()

    def _failed(self, message: str, **_: Any) -> None:
        """`call_runtime`'s way to say a read failed: in the dialog, where the next good read replaces it."""
        self.query_one("#gateway-summary", Static).update(plain(message, RATE_BAD))

    @work(exclusive=True, group="gateway", exit_on_error=False)
    async def _load(self) -> None:
        try:
            info = await call_runtime(self.runtime, self._failed, "gateway", what="the gateway view")
        finally:
            self._loading = False
        if info is FAILED or not self.is_attached:
            return
        await self.show(info)

    async def show(self, info: GatewayInfo) -> None:
        self.info = info
        self.query_one("#gateway-summary", Static).update(summary_text(info))
        box = self.query_one("#gateway-pools", VerticalScroll)
        names = [p.name for p in info.pools]
        if names != self._pools:
            # Pools come and go only when the crew file changes: build the blocks again then.
            self._pools = names
            await box.remove_children()
            await box.mount_all(PoolBlock(p) for p in info.pools)
            return
        for block, pool in zip(box.query(PoolBlock), info.pools, strict=False):
            block.show(pool)

    def action_close(self) -> None:
        self.dismiss(None)
