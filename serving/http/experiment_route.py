"""The candidates endpoint's experiment step (`candidates serve --experiment`): which arm answers, the
answer on that arm, its exposure queued (serving/experiments/arms.py does the work)."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response

from serving.experiments.arms import Experiment, request_id_of
from serving.http.auth import override_refusal
from serving.http.guards import error_response


async def answer_on_arm(request: Request, experiment: Experiment, pair, arm: str | None, arguments: tuple):
    """`(answer, pair, extra fields)` of the request on the user's arm (or `?arm=`, write token checked),
    or the error Response. `arguments`: `(store, user_id, k, exclude_seen, live, regions)`."""
    settings = request.app.state.settings
    if arm is not None and (refused := override_refusal(request.scope, settings)) is not None:
        return error_response(*refused)
    try:
        choice = experiment.choose(arguments[1], arm)
    except KeyError:
        names = ", ".join(experiment.config.shares)
        return error_response(422, f"no arm {arm!r} in experiment {experiment.config.name} (arms: {names})")
    state = request.app.state
    answer, pair = await experiment.answer(choice, pair, state.dispatcher, bool(settings.redis_url), *arguments)
    if answer is None:
        return error_response(503, f"the model of arm {choice.arm.name} is not loaded yet")
    experiment.record(request_id_of(request.headers.get("x-request-id")), choice, answer, pair)
    return answer, pair, {"arm": choice.arm.name}


def no_experiment(arm: str | None) -> Response | None:
    """The error for `?arm=` on a service without an experiment, else None."""
    if arm is None:
        return None
    return error_response(422, "?arm= needs an experiment (candidates serve --experiment FILE)")
