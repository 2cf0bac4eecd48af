"""Stream helpers for pysim testbenches (``add_testbench``, ``ctx``), shared by the tests.

`put` sends one beat on a stream the design consumes (payload and valid, wait for
ready, tick); `get` takes one beat from a stream the design produces; `put_all` and
`get_all` do a whole block, optionally idling a random number of cycles before each
beat (random stalls on the source, back-pressure on the sink).
"""

from __future__ import annotations


async def put(ctx, stream, payload) -> None:
    """Send `payload` (an int, or a dict / list for a layout) as one beat: it transfers at
    the first edge before which ``ready`` is high."""
    ctx.set(stream.payload, payload)
    ctx.set(stream.valid, 1)
    while True:
        ready = ctx.get(stream.ready)
        await ctx.tick()
        if ready:
            break
    ctx.set(stream.valid, 0)


async def get(ctx, stream):
    """Take one beat; returns its payload (a `data.Const` for a layout)."""
    ctx.set(stream.ready, 1)
    while True:
        valid, payload = ctx.get(stream.valid), ctx.get(stream.payload)
        await ctx.tick()
        if valid:
            break
    ctx.set(stream.ready, 0)
    return payload


async def _idle(ctx, idle) -> None:
    for _ in range(idle() if idle is not None else 0):
        await ctx.tick()


async def put_all(ctx, stream, payloads, idle=None) -> None:
    """`put` every payload in order; `idle()` (if given) cycles of valid low before each."""
    for payload in payloads:
        await _idle(ctx, idle)
        await put(ctx, stream, payload)


async def get_all(ctx, stream, count: int, idle=None, into: list | None = None) -> list:
    """`get` `count` beats; `idle()` (if given) cycles of ready low before each. Beats are
    appended to `into` as they arrive (so another testbench can watch progress)."""
    into = [] if into is None else into
    for _ in range(count):
        await _idle(ctx, idle)
        into.append(await get(ctx, stream))
    return into


def feeder(stream, payloads, idle=None):
    """A testbench (for ``sim.add_testbench``) that `put_all`s `payloads` on `stream`."""
    async def testbench(ctx):
        await put_all(ctx, stream, payloads, idle)
    return testbench


def random_idle(rng, p_busy: float):
    """An `idle` for the helpers: a geometric number of idle cycles, mean
    ``p_busy / (1 - p_busy)`` (0 when `p_busy` is 0)."""
    return lambda: int(rng.geometric(1 - p_busy)) - 1
