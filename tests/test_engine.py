"""Rules as data: every rule's examples, malformed files, user overrides, the zoo."""

import json

import numpy as np
from pathlib import Path

import pytest

from gradadvisor.analysis.engine import builtin_rules_dir, load_rule_file, load_rules, run_examples, select_rules
from gradadvisor.errors import COMMAND_LINE, RuleError, UsageError
from gradadvisor.examples import EXAMPLES

RULES = load_rules()


@pytest.mark.parametrize("rule_id", sorted(RULES))
def test_rule_examples_fire_as_documented(rule_id):
    for example, fired in run_examples(RULES[rule_id]):
        assert fired == example["fires"], (rule_id, example)


def test_every_rule_has_rationale_fixes_and_both_kinds_of_example():
    assert len(RULES) >= 10
    for rule in RULES.values():
        assert rule.rationale and rule.summary and rule.fixes
        assert {e["fires"] for e in rule.examples} == {True, False}
        assert Path(rule.source).name.startswith(rule.id + "-" + rule.name)


def test_builtin_rules_cover_the_required_families():
    names = {rule.name for rule in RULES.values()}
    assert {"vanishing-gradients", "vanishing-through-time", "exploding-gradients",
            "exploding-through-time", "gradient-blowup", "nonfinite-values", "dead-relu-units",
            "saturated-units", "slow-updates", "large-updates", "no-learning-signal",
            "softmax-one-unit", "sigmoid-multiclass", "logits-into-probability-loss",
            "probabilities-into-logits-loss"} <= names


VALID = Path(builtin_rules_dir(), "GA402-saturated-units.yaml").read_text()


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("op: \">=\"", "op: \"=>\"", 1),
     ":18: rule GA402: unknown operator '=>'. Use one of <, <=, >, >=, ==, !=."),
    (lambda t: t.replace("signal: saturated_fraction", "signal: saturation_level", 1),
     ":18: rule GA402: unknown signal 'saturation_level'. Run 'gradadvisor rules signals' for the list."),
    (lambda t: t.replace("severity: warning", "severity: fatal"),
     ":4: rule GA402: the field 'severity' must be one of error, warning, info; got 'fatal'."),
    (lambda t: t.replace("scope: layer\n", "scope: layer\ncolour: red\n"),
     ":6: rule GA402: unknown field 'colour'. Allowed fields: id, name, category, severity, scope, "
     "summary, rationale, when, message, fixes, examples, causes, locate, explain."),
    (lambda t: t.replace("id: GA402\n", ""), ":1: missing field 'id'."),
    (lambda t: t.replace("{layer}", "{layer.__class__}"),
     ":20: rule GA402: the message uses an unknown field {layer.__class__}. Use layer, layers, "
     "num_layers, value, step or the rule's own signals."),
    (lambda t: t.replace("    fires: false\n", "    fires: true\n"),
     ":25: rule GA402: 'examples' must include at least one case that fires and one that does not."),
    (lambda t: t.replace("when:\n", "when: !!python/object/apply:os.system ['true']\nunused:\n"),
     ": not valid YAML (could not determine a constructor for the tag "
     "'tag:yaml.org,2002:python/object/apply:os.system'). Fix the syntax."),
    (lambda t: t + "  - [unclosed\n",
     ": not valid YAML ("),
    (lambda t: "- just\n- a list\n", ":1: a rule file must hold a mapping of fields (id, name, when, ...)."),
    (lambda t: t.replace("value: 0.5}", "value: high}"),
     ":18: rule GA402: the value for 'saturated_fraction' must be a number; got 'high'."),
])
def test_malformed_rule_file_gives_one_clear_line(tmp_path, edit, message):
    path = tmp_path / "GA402-saturated-units.yaml"
    path.write_text(edit(VALID))
    with pytest.raises(RuleError) as caught:
        load_rule_file(path)
    text = str(caught.value)
    assert text.startswith(str(path))
    assert message in text
    assert "\n" not in text


def test_user_folder_overrides_a_builtin_threshold(tmp_path, zoo_diagnoses):
    from gradadvisor.analysis.engine import evaluate

    probe = zoo_diagnoses["healthy-relu"].probe
    assert not [f for f in evaluate(probe, RULES) if f.rule == "GA401"]
    text = Path(builtin_rules_dir(), "GA401-dead-relu-units.yaml").read_text()
    text = text.replace("{signal: dead_fraction_persistent, op: \">=\", value: 0.75}",
                        "{signal: dead_fraction, op: \">=\", value: 0.05}")
    text = text.replace("dead_fraction_persistent:", "dead_fraction:")
    text = text.replace("dead_fraction: 0.15, loss_nonfinite", "dead_fraction: 0.01, loss_nonfinite")
    text = text.replace("dead_fraction: 0.55, loss_nonfinite", "dead_fraction: 0.01, loss_nonfinite")
    (tmp_path / "strict-dead.yaml").write_text(text)
    rules = load_rules([tmp_path])
    assert rules["GA401"].source == str(tmp_path / "strict-dead.yaml")
    assert len(rules) == len(RULES)
    findings = [f for f in evaluate(probe, rules) if f.rule == "GA401"]
    assert findings and findings[0].first_layer == probe.layers[0].name


def test_select_and_ignore_check_ids():
    assert list(select_rules(RULES, ["GA101"], None)) == ["GA101"]
    assert "GA101" not in select_rules(RULES, None, ["GA101"])
    with pytest.raises(UsageError) as caught:
        select_rules(RULES, ["GA999"], None)
    assert str(caught.value).startswith("The 'select' parameter names the unknown rule id 'GA999'. "
                                        "Known ids: GA101, ")
    with pytest.raises(UsageError) as caught:
        select_rules(RULES, None, ["GA999"], COMMAND_LINE)
    assert str(caught.value).startswith("--ignore names the unknown rule id 'GA999'.")


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_zoo_example_gets_its_labelled_verdict(zoo_diagnoses, name):
    diagnosis = zoo_diagnoses[name]
    expected = EXAMPLES[name].expected
    if not expected:
        assert diagnosis.status == "healthy", [f.message for f in diagnosis.findings]
    else:
        assert diagnosis.primary_category == expected[0], diagnosis.categories
        main = next(f for f in diagnosis.findings if f.category == expected[0])
        assert main.first_layer is not None and main.evidence and main.causes


def test_findings_name_the_first_layer_and_cause(zoo_diagnoses):
    vanishing = next(f for f in zoo_diagnoses["deep-sigmoid"].findings if f.rule == "GA101")
    assert vanishing.layers[0] == "dense_1"
    assert vanishing.first_layer == vanishing.layers[-1]
    assert "saturating_activation" in [c["cause"] for c in vanishing.causes]
    dead = next(f for f in zoo_diagnoses["dying-relu"].findings if f.rule == "GA401")
    assert dead.first_layer == "dense_1"
    assert [c["cause"] for c in dead.causes] == ["bias_initialization"]
    exploding = zoo_diagnoses["high-lr-relu"]
    assert "learning_rate" in [c["cause"] for f in exploding.findings for c in f.causes]
    assert zoo_diagnoses["tiny-tanh"].findings[0].causes[1]["cause"] == "small_initialization"


def test_json_validates_against_the_documented_schema(zoo_diagnoses):
    import jsonschema

    schema = json.loads(Path(__file__).parent.parent.joinpath("gradadvisor", "diagnosis.schema.json").read_text())
    for diagnosis in zoo_diagnoses.values():
        document = json.loads(diagnosis.to_json())
        jsonschema.validate(document, schema)
    bad = json.loads(zoo_diagnoses["deep-sigmoid"].to_json())
    bad["findings"][0]["category"] = "sad_gradients"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_diagnosis_round_trips_through_json(zoo_diagnoses):
    from gradadvisor.analysis.diagnosis import Diagnosis

    for diagnosis in zoo_diagnoses.values():
        text = diagnosis.to_json()
        assert Diagnosis.from_json(text).to_json() == text


def _control(keras, kind):
    """Hard healthy controls: models that look risky but train well."""
    layers = keras.layers
    rng = np.random.default_rng(0)
    if kind == "shallow-sigmoid":
        model = keras.Sequential([keras.Input((16,)), layers.Dense(16, activation="sigmoid"),
                                  layers.Dense(3, activation="softmax")])
        x = rng.normal(size=(256, 16)).astype("float32")
        y = np.argmax(x[:, :3], 1)
    elif kind == "residual-batchnorm":
        inputs = keras.Input((16,))
        hidden = layers.Dense(16)(inputs)
        for _ in range(6):
            branch = layers.Dense(16)(hidden)
            branch = layers.BatchNormalization()(branch)
            branch = layers.Activation("relu")(branch)
            hidden = layers.Add()([hidden, branch])
        model = keras.Model(inputs, layers.Dense(3, activation="softmax")(hidden))
        x = rng.normal(size=(256, 16)).astype("float32")
        y = np.argmax(x[:, :3], 1)
    elif kind == "small-cnn":
        model = keras.Sequential([keras.Input((8, 8, 1)), layers.Conv2D(8, 3, activation="relu"),
                                  layers.Conv2D(8, 3, activation="relu"), layers.Flatten(),
                                  layers.Dense(3, activation="softmax")])
        x = rng.normal(size=(256, 8, 8, 1)).astype("float32")
        y = np.argmax(x[:, 0, :3, 0], 1)
    else:
        model = keras.Sequential([keras.Input((10, 4)), layers.LSTM(16), layers.Dense(1, activation="sigmoid")])
        x = rng.normal(size=(256, 10, 4)).astype("float32")
        y = (x[:, -1, 0] > 0).astype("float32")
    model.compile(keras.optimizers.Adam(1e-3), "binary_crossentropy" if kind == "short-lstm"
                  else "sparse_categorical_crossentropy")
    return model, x, y


@pytest.mark.parametrize("kind", ["shallow-sigmoid", "residual-batchnorm", "small-cnn", "short-lstm"])
def test_healthy_controls_get_no_warning_or_error(keras_module, kind):
    from gradadvisor.api import diagnose

    model, x, y = _control(keras_module, kind)
    diagnosis = diagnose(model, x, y, steps=30)
    assert diagnosis.status == "healthy", [f.message for f in diagnosis.findings]
