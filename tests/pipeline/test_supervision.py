"""single_error: one exception out of nested groups, cancellations left to trio."""

from __future__ import annotations

import logging

import pytest
import trio

from trio_klines.pipeline.supervision import single_error


class Bug(Exception):
    pass


async def fail(exc: BaseException) -> None:
    raise exc


async def test_the_failure_comes_out_of_three_nested_nurseries() -> None:
    async def inner() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fail, Bug("deep"))
            await trio.sleep_forever()

    async def middle() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(inner)

    async def outer() -> None:
        with single_error():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(middle)
                await trio.sleep_forever()

    with pytest.raises(Bug, match="deep"):
        await outer()


def test_the_first_of_several_is_raised_and_the_others_logged(caplog: pytest.LogCaptureFixture) -> None:
    group = BaseExceptionGroup("two", [ExceptionGroup("one", [Bug("first")]), KeyError("second")])
    with caplog.at_level(logging.ERROR), pytest.raises(Bug, match="first"), single_error():
        raise group
    assert "KeyError('second')" in caplog.text


def test_an_exception_that_is_not_a_group_is_untouched() -> None:
    error = Bug("plain")
    with pytest.raises(Bug) as raised, single_error():
        raise error
    assert raised.value is error


async def test_cancellation_goes_through() -> None:
    with trio.move_on_after(0.01) as scope, single_error():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever)
            await trio.sleep_forever()
    assert scope.cancelled_caught
