"""The HTML report: what it says and in which order, escaping, self-containment, NaN."""

import base64
import functools
import html as html_module
import json
import math
import re
import subprocess
import sys

import pytest
from markupsafe import escape

from gradadvisor.analysis.diagnosis import Diagnosis
from gradadvisor.report.html import format_number, format_percent, render_html

EXAMPLES = ("deep-sigmoid", "large-init-relu", "long-rnn", "healthy-relu")
#: Every section id, in the order the report must show them.
SECTIONS = ("verdict", "findings", "gradient-flow", "gradient-through-time", "loss", "units",
            "layers", "recommendation", "reproducibility")
ALWAYS = ("verdict", "findings", "gradient-flow", "loss", "layers", "recommendation",
          "reproducibility")
EVIL = "<script>alert(1)</script>"


@functools.lru_cache(maxsize=None)
def example_diagnoses() -> dict:
    """``{example: Diagnosis}`` for the four report shapes, probed once per session.

    A plain cached function rather than only a fixture, so the browser test
    can share the same probes instead of training the models twice.
    """
    from gradadvisor.api import diagnose
    from gradadvisor.examples import build_example

    results = {}
    for name in EXAMPLES:
        model, x, y = build_example(name)
        results[name] = diagnose(model, x, y, steps=10, batch_size=32,
                                 command=f"gradadvisor diagnose --example {name} --no-search")
    return results


def recommendation_fixture() -> dict:
    """A recommendation as the search writes it: two trials and a confirmation run."""
    no_change = {"initializer": None, "activation": None, "normalization": None,
                 "clipping": None, "clip_threshold": None, "learning_rate_scale": 1.0}
    chosen = dict(no_change, initializer="he_normal", activation="relu")
    return {
        "recommended": True,
        "reason": "He initialization with ReLU removed the vanishing gradients and trained to "
                  "a lower loss than the original in the same number of steps.",
        "setup": chosen,
        "dimensions": [
            {"name": "initializer", "values": ["he_normal", "glorot_uniform"],
             "opened_by": ["GA101"]},
            {"name": "activation", "values": ["relu", "sigmoid"], "opened_by": ["GA101"]},
            {"name": "normalization", "values": [None, "batch"], "opened_by": ["GA101"]},
        ],
        "trials": [
            {"trial": "trial_0001", "rank": 1, "setup": chosen, "score": 0.41,
             "status": "healthy", "val_loss": 0.52, "findings": [], "seconds": 3.2},
            {"trial": "trial_0002", "rank": 2,
             "setup": dict(no_change, normalization="batch", clipping="clipnorm",
                           clip_threshold=1.0, learning_rate_scale=0.5),
             "score": math.inf, "status": "diverged", "val_loss": math.nan,
             "findings": ["GA101", "GA301"], "seconds": 1.7},
        ],
        "changes": [
            {"layer": "dense_1", "change": "kernel initializer", "from": "GlorotUniform",
             "to": "HeNormal"},
            {"layer": "dense_1", "change": "activation", "from": "sigmoid", "to": "relu"},
            {"layer": "(optimizer)", "change": "gradient clipping", "from": None,
             "to": "clipnorm=1.0"},
        ],
        "snippet": 'layers.Dense(32, activation="relu", kernel_initializer="he_normal")\n'
                   "assert width < 64 and depth > 2",
        "confirmation": {
            "steps": 6, "seed": 0, "metric_name": "accuracy",
            "original": {"loss": [2.5, 2.4, 2.38, 2.36, math.nan, math.inf], "val_loss": 2.3,
                         "val_metric": 0.11, "status": "error"},
            "recommended": {"loss": [2.4, 1.9, 1.4, 1.0, 0.8, 0.6], "val_loss": 0.7,
                            "val_metric": 0.81, "status": "healthy"},
            "improved": True,
        },
        "fixed_model_path": "fixed/deep_sigmoid_fixed.keras",
        "budget": {"max_trials": 8, "trial_steps": 40, "time_budget": None,
                   "seconds_used": 21.4, "tuner": "bayesian"},
    }


def renamed(diagnosis, old: str, new: str, **model) -> Diagnosis:
    """The diagnosis with layer ``old`` called ``new`` everywhere, via its dict form."""
    text = json.dumps(diagnosis.to_dict()).replace(old, json.dumps(new)[1:-1])
    data = json.loads(text)
    data["probe"].update(model)
    return Diagnosis.from_dict(data)


CHART_SOURCE = re.compile(r'<img src="data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)"')


def with_charts(html: str) -> str:
    """``html`` followed by the SVG documents of the charts it embeds, decoded."""
    return html + "".join(base64.b64decode(data).decode("utf-8")
                          for data in CHART_SOURCE.findall(html))


def section(html: str, name: str) -> str:
    """The HTML of one top-level section (up to the next one), with its charts decoded."""
    start = html.index(f'id="{name}"')
    following = [html.index(f'id="{other}"') for other in SECTIONS
                 if f'id="{other}"' in html and html.index(f'id="{other}"') > start]
    return with_charts(html[start:min(following, default=len(html))])


@pytest.fixture(scope="session")
def diagnoses():
    return example_diagnoses()


@pytest.fixture(scope="session")
def reports(diagnoses):
    return {name: render_html(diagnosis) for name, diagnosis in diagnoses.items()}


@pytest.mark.parametrize("name", EXAMPLES)
def test_sections_come_in_order(reports, name):
    html = reports[name]
    present = [s for s in SECTIONS if f'id="{s}"' in html]
    assert set(ALWAYS) <= set(present)
    positions = [html.index(f'id="{s}"') for s in present]
    assert positions == sorted(positions)
    assert html.startswith("<!doctype html>")


@pytest.mark.parametrize("name", EXAMPLES)
def test_verdict_banner_and_findings_say_what_the_diagnosis_says(diagnoses, reports, name):
    diagnosis, html = diagnoses[name], reports[name]
    banner = section(html, "verdict")
    assert f'class="banner {diagnosis.status}"' in banner
    assert str(escape(diagnosis.headline())) in banner
    findings = section(html, "findings")
    assert findings.count('<article class="finding') == len(diagnosis.findings)
    for finding in diagnosis.findings:
        assert str(escape(finding.message)) in findings
        assert str(escape(" ".join(finding.explanation.split()[:8]))) in findings
        if finding.first_layer:
            assert f"<code>{escape(finding.first_layer)}</code>" in findings
        for cause in finding.causes:
            assert str(escape(cause["reason"])) in findings
        for layer in finding.evidence.get("per_layer", {}):
            assert str(escape(layer)) in findings
    if diagnosis.status == "healthy":
        assert "No rule fired" in findings


@pytest.mark.parametrize("name", EXAMPLES)
def test_gradient_flow_chart_shows_every_layer_and_marks_the_problem(diagnoses, reports, name):
    diagnosis, flow = diagnoses[name], section(reports[name], "gradient-flow")
    assert flow.count("<svg") == 1
    for info in diagnosis.probe.weighted_layers():
        assert f">{escape(info.name)}</text>" in flow
    for finding in diagnosis.at_least("warning"):
        if finding.first_layer:
            assert finding.rule in flow
    assert "median of" in flow


@pytest.mark.parametrize("name", EXAMPLES)
def test_report_is_self_contained(reports, name):
    html = reports[name]
    lowered = html.lower()
    for forbidden in ("http://", "https://", "<script", "<link", "@import", "<iframe",
                      "<object", "<embed", "//cdn", "xlink:href"):
        assert forbidden not in lowered, forbidden
    # The only sources are the charts' own data URIs, and the policy allows nothing else.
    sources = re.findall(r'src="([^"]*)"', html)
    assert sources and all(s.startswith("data:image/svg+xml;base64,") for s in sources)
    assert lowered.count("src=") == len(sources)
    assert "img-src data:;" in html
    # url(...) only ever points inside the page (SVG clip paths).
    assert all(target.startswith("#") for target in re.findall(r"url\(\s*([^)]*)\)", html))
    assert all(target.startswith("#") for target in re.findall(r'href="([^"]*)"', html))
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    assert "@media print" in html and 'name="viewport"' in html


@pytest.mark.parametrize("name", EXAMPLES)
def test_report_is_small(reports, name):
    assert len(reports[name].encode("utf-8")) < 2_000_000


@pytest.mark.parametrize("name", EXAMPLES)
def test_rerendering_from_json_gives_the_same_html(diagnoses, reports, name):
    again = Diagnosis.from_json(diagnoses[name].to_json())
    assert render_html(again) == reports[name]


def test_names_are_escaped_everywhere_including_the_charts(diagnoses):
    diagnosis = renamed(diagnoses["deep-sigmoid"], "dense_8", EVIL,
                        model_name='<img src=x onerror="alert(2)">')
    diagnosis.command = "gradadvisor diagnose '<b>bold</b>.keras'"
    diagnosis.model_path = "</code><script>alert(3)</script>.keras"
    html = render_html(diagnosis)
    assert "<script" not in html and "<b>" not in html
    # The only images are the charts, embedded as data URIs (inert: no script, no request).
    assert html.count("<img") == len(CHART_SOURCE.findall(html)) >= 2
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=&#34;alert(2)&#34;&gt;" in html
    assert "&lt;/code&gt;&lt;script&gt;alert(3)" in html
    flow = section(html, "gradient-flow")
    assert ">&lt;scrip…1)&lt;/script&gt;</text>" in flow  # the shortened tick label
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in section(html, "layers")


def test_names_that_look_like_math_or_svg_stay_plain_text_in_charts(diagnoses):
    diagnosis = diagnoses["deep-sigmoid"]
    for old, new in [("dense_3", "cost$x$"), ("dense_4", "url(#a)"), ("dense_5", 'id="b"'),
                     ("dense_9", "http://c")]:
        diagnosis = renamed(diagnosis, old, new)
    flow = section(render_html(diagnosis), "gradient-flow")
    for text in ("cost$x$", "url(#a)", 'id="b"', "http://c"):
        assert f">{text}</text>" in flow


def test_nonfinite_values_are_left_out_of_charts_and_explained(diagnoses, reports):
    diagnosis, html = diagnoses["large-init-relu"], reports["large-init-relu"]
    step = diagnosis.probe.nonfinite["step"]
    assert step is not None
    flow = section(html, "gradient-flow")
    assert f"NaN/inf gradient at step {step}" in flow
    assert "left out of the median: NaN or infinite gradients" in flow
    assert f"at step {step} the {diagnosis.probe.nonfinite['where']} became NaN or infinite" in flow
    assert f"NaN/inf {diagnosis.probe.nonfinite['where']} at step {step}" in section(html, "loss")
    assert re.search(r'\sd="[^"]*nan', with_charts(html), re.IGNORECASE) is None


def test_a_probe_with_nothing_finite_still_renders(diagnoses):
    data = diagnoses["deep-sigmoid"].to_dict()
    probe = data["probe"]
    probe["loss"] = ["nan"] * len(probe["loss"])
    for stats in probe["stats"].values():
        stats["grad_rms"] = ["inf" if i % 2 else "nan" for i in range(len(stats["grad_rms"]))]
    html = render_html(Diagnosis.from_dict(data))
    assert "No layer has a finite, non-zero gradient to draw." in section(html, "gradient-flow")
    assert "No step had a finite loss." in section(html, "loss")


def test_timesteps_whose_gradient_underflowed_to_zero_are_shaded_and_explained(diagnoses):
    data = diagnoses["long-rnn"].to_dict()
    for steps in data["probe"]["timestep_grad_norms"].values():
        for norms in steps:
            norms[:30] = [0.0] * 30
    part = section(render_html(Diagnosis.from_dict(data)), "gradient-through-time")
    assert "The median gradient is exactly 0 (below float32 range) at 30 of" in part


@pytest.mark.parametrize("name", EXAMPLES)
def test_gradient_through_time_only_for_recurrent_models(diagnoses, reports, name):
    html = reports[name]
    recurrent = any(info.recurrent for info in diagnoses[name].probe.layers)
    assert recurrent == (name == "long-rnn")
    assert ('id="gradient-through-time"' in html) == recurrent
    if recurrent:
        through_time = section(html, "gradient-through-time")
        assert through_time.count("<svg") == len(diagnoses[name].probe.timestep_grad_norms) >= 1
        assert "timestep (first → last)" in through_time


def test_recommendation_section_shows_changes_code_trials_and_confirmation(diagnoses):
    diagnosis = Diagnosis.from_json(diagnoses["deep-sigmoid"].to_json())
    diagnosis.recommendation = recommendation_fixture()
    html = render_html(diagnosis)
    part = section(html, "recommendation")
    order = [part.index(f'id="recommendation-{name}"')
             for name in ("changes", "snippet", "trials", "dimensions", "confirmation")]
    assert order == sorted(order)
    assert "Recommended setup (tested)" in part
    assert "A tested fix is recommended below." in section(html, "verdict")
    assert "<td>kernel initializer</td><td>GlorotUniform</td><td>HeNormal</td>" in part
    assert ("<pre><code>layers.Dense(32, activation=&#34;relu&#34;, "
            "kernel_initializer=&#34;he_normal&#34;)\nassert width &lt; 64 and depth &gt; 2"
            "</code></pre>") in part
    assert "trial_0001" in part and "trial_0002" in part and "∞" in part
    assert '<span class="badge diverged">diverged</span>' in part
    assert "The recommended setup trains better." in part
    assert part.count("<svg") == 1 and "original setup" in part and "recommended setup" in part
    assert "The original setup&#39;s loss was NaN or infinite at steps 4–5" in part
    assert "fixed/deep_sigmoid_fixed.keras" in part and "bayesian" in part
    # The JSON form carries NaN and infinity as strings: same page after a round trip.
    assert render_html(Diagnosis.from_json(diagnosis.to_json())) == html


def test_without_a_recommendation_the_report_says_why(diagnoses, reports):
    assert "Search not run (lint mode)" in section(reports["deep-sigmoid"], "recommendation")
    assert "Nothing to fix" in section(reports["healthy-relu"], "recommendation")


def test_a_recommendation_that_found_nothing_says_so(diagnoses):
    diagnosis = Diagnosis.from_json(diagnoses["deep-sigmoid"].to_json())
    diagnosis.recommendation = {"recommended": False,
                                "reason": "No trial beat the original setup.", "trials": []}
    part = section(render_html(diagnosis), "recommendation")
    assert "No setup recommended" in part and "No trial beat the original setup." in part


def test_footer_has_what_it_takes_to_reproduce(diagnoses, reports):
    diagnosis = diagnoses["healthy-relu"]
    footer = section(reports["healthy-relu"], "reproducibility")
    assert "gradadvisor diagnose --example healthy-relu --no-search" in footer
    for label in ("gradadvisor", "TensorFlow", "Keras", "Keras Tuner"):
        assert f"{label} {diagnosis.versions.get(label.lower().replace(' ', '-'))}" in footer
    probe = diagnosis.probe
    assert f"batch size {probe.batch_size}, seed {probe.seed}" in footer
    assert f"{probe.steps_run} of {probe.num_steps} steps" in footer
    assert str(escape(probe.data_source)) in footer


def test_rendering_needs_no_tensorflow(diagnoses):
    code = ("import sys\n"
            "from gradadvisor.analysis.diagnosis import Diagnosis\n"
            "from gradadvisor.report.html import render_html\n"
            "html = render_html(Diagnosis.from_json(sys.stdin.read()))\n"
            "loaded = {m.split('.')[0] for m in sys.modules}\n"
            "print(len(html), bool(loaded & {'tensorflow', 'keras'}))")
    result = subprocess.run([sys.executable, "-c", code], input=diagnoses["long-rnn"].to_json(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    size, imported = result.stdout.split()
    assert int(size) > 10_000 and imported == "False"


@pytest.mark.parametrize("value, text", [
    (3.5767e-4, "3.58e-4"), (0.23035, "0.23"), (1204.3, "1,204"), (2.71e9, "2.71e9"),
    (5.0, "5"), (12, "12"), (0.0, "0"), (-0.5, "-0.5"), (math.nan, "NaN"), ("inf", "∞"),
    ("-inf", "−∞"), ("nan", "NaN"), (None, "—"), (True, "yes"),
])
def test_numbers_are_formatted_for_people(value, text):
    assert format_number(value) == text


@pytest.mark.parametrize("value, text", [(0.5625, "56%"), (0.001, "<1%"), (0, "0%"),
                                         (None, "—"), ("nan", "NaN")])
def test_fractions_are_formatted_as_percentages(value, text):
    assert format_percent(value) == text


def test_a_diagnosis_shows_its_report_in_a_notebook(diagnoses):
    diagnosis = renamed(diagnoses["deep-sigmoid"], "dense_8", EVIL)
    frame = diagnosis._repr_html_()
    assert frame.startswith('<iframe srcdoc="') and frame.endswith("></iframe>")
    # The sandbox allows nothing: no script runs even if the page had one.
    assert ' sandbox title="gradadvisor report" ' in frame
    page = html_module.unescape(re.match(r'<iframe srcdoc="([^"]*)"', frame).group(1))
    assert page == render_html(diagnosis)
    assert "<script" not in frame and EVIL not in frame


def test_the_budget_line_says_which_clock_the_time_budget_counts(diagnoses):
    diagnosis = Diagnosis.from_json(diagnoses["deep-sigmoid"].to_json())
    for clock, unit in (("cpu", "at most 30 CPU s"), ("wall", "at most 30 s")):
        recommendation = recommendation_fixture()
        recommendation["budget"].update(time_budget=30.0, clock=clock)
        diagnosis.recommendation = recommendation
        assert unit + ";" in section(render_html(diagnosis), "recommendation")
