"""Message templates at run time (issue #16): a rule's ``message`` is a Jinja2 template with
the documented variables, ``${…}`` references keep working, a value is data (a ``{{`` in a
variable is never evaluated), the sandbox holds, and a rule without ``message`` gets a default
that reads well. A real ``tminus run`` sends to a real HTTP receiver on loopback.

Mutations tried: ``rule_rows`` using the caller's text instead of ``text_for`` → every
assertion on the texts fails; ``render`` putting ``${…}`` values into the template's source
(``resolver.resolve`` before Jinja) → the variable holding ``{{ 7 * 7 }}`` renders as 49
(``test_a_value_is_data...`` fails).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Tm
from tests.engine.test_outbox import Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def _texts(receiver: Receiver) -> dict[str, str]:
    return {r["body"]["message"]["when"]: r["body"]["message"]["text"] for r in receiver.requests}


PLAN = """\
tminus: 1
name: tpl
version: "2.4"
environment: test
variables:
  release: "2.4.1"
  braces: "{{{{ 7 * 7 }}}}"
notifications:
  channels:
    hook:
      kind: webhook
      url: http://127.0.0.1:{port}/hook
  rules:
    - when: phase_start
      message: >-
        {{{{ deploy.plan }}}} {{{{ vars.release }}}} (${{release}}): phase {{{{ phase.number }}}}
        of {{{{ phase.of }}}} '{{{{ phase.name }}}}' by {{{{ started_by }}}}
        {{% if failed_step %}}FAILED{{% else %}}fine{{% endif %}}
        [{{{{ when }}}}/{{{{ occurrence }}}}]
    - when: phase_end
      message: "${{braces}} {{{{ vars.braces }}}} $${{not_a_ref}}"
    - when: failure
    - when: paused
    - when: success
phases:
  - name: build
    estimate: 1m
    steps:
      - kind: run
        command: "true"
  - name: ship
    estimate: 2m
    on_failure: pause
    steps:
      - kind: run
        name: push the image
        command: "echo registry down >&2; exit 4"
"""


def test_templates_render_with_the_variables_and_defaults_read_well(
    tmp_path: Path, receiver: Receiver
) -> None:
    tm = Tm(tmp_path)
    (tmp_path / "plan.yaml").write_text(PLAN.format(port=receiver.port))
    tm("run", "plan.yaml")
    assert tm.json("status", "tpl-1")["state"] == "paused"
    starts = [
        r["body"]["message"]["text"]
        for r in receiver.requests
        if r["body"]["message"]["when"] == "phase_start"
    ]
    assert starts == [
        "tpl 2.4.1 (2.4.1): phase 1 of 2 'build' by alice fine [phase_start/1]",
        "tpl 2.4.1 (2.4.1): phase 2 of 2 'ship' by alice fine [phase_start/2]",
    ]
    texts = _texts(receiver)
    # defaults, one per `when`
    assert texts["failure"].startswith("tpl (test) failed: push the image failed")
    assert "registry down" in texts["failure"]
    assert texts["paused"].startswith("tpl (test) paused: push the image failed")
    assert texts["paused"].endswith("(tminus resume tpl-1).")


def test_a_value_is_data_never_a_template(tmp_path: Path, receiver: Receiver) -> None:
    tm = Tm(tmp_path)
    (tmp_path / "plan.yaml").write_text(PLAN.format(port=receiver.port))
    tm("run", "plan.yaml")
    assert _texts(receiver)["phase_end"] == "{{ 7 * 7 }} {{ 7 * 7 }} ${not_a_ref}"


def test_the_sandbox_holds_and_a_bad_template_is_sent_as_written(
    tmp_path: Path, receiver: Receiver
) -> None:
    tm = Tm(tmp_path)
    plan = PLAN.format(port=receiver.port).replace(
        "    - when: success\n",
        '    - when: success\n      message: "{{ deploy.id.__class__.__mro__ }}"\n',
    )
    plan = plan.replace('command: "echo registry down >&2; exit 4"', 'command: "true"')
    (tmp_path / "plan.yaml").write_text(plan)
    tm("run", "plan.yaml", check=0)
    text = _texts(receiver)["success"]
    assert "template error: SecurityError" in text
    assert "<class" not in text
