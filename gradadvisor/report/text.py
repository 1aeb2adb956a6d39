"""The terminal summary: verdict first, then findings, then what to do."""

from __future__ import annotations

import textwrap

_FIX_TEXT = {
    "initializer": "use a variance-preserving initializer (He for ReLU-family, Glorot/LeCun otherwise)",
    "activation": "replace saturating activations with ReLU, Leaky ReLU, ELU/SELU or GELU",
    "normalization": "add batch normalization (layer normalization in sequence models)",
    "clipping": "clip gradients on the optimizer (clipnorm or global_clipnorm)",
    "learning_rate": "lower the learning rate",
    "recurrence": "use ReLU units with an identity recurrent matrix (IRNN) in SimpleRNN layers",
    "output": "make the output layer and the loss agree (activation, units, from_logits)",
}
_COLORS = {"error": "red", "warning": "yellow", "healthy": "green", "info": "cyan"}


def _style(text, color, enabled):
    if not enabled:
        return text
    import click

    return click.style(text, fg=color, bold=True)


def _wrap(text, indent):
    return textwrap.fill(" ".join(text.split()), width=88, initial_indent=indent,
                         subsequent_indent=indent)


def render_text(diagnosis, color: bool = False) -> str:
    """Render a :class:`~gradadvisor.Diagnosis` for the terminal."""
    probe = diagnosis.probe
    status = diagnosis.status
    lines = [
        _style(f"{status.upper()}", _COLORS[status], color) + f"  {diagnosis.headline()}",
        f"  model {probe.model_name} ({probe.model_class}, {probe.num_params:,} trainable "
        f"parameters); probed {probe.steps_run} of {probe.num_steps} steps at batch "
        f"{probe.batch_size} on {probe.data_source}; loss {probe.loss_name}.",
    ]
    for note in probe.notes:
        lines.append(_wrap(note, "  note: "))
    shown = [f for f in diagnosis.findings]
    if shown:
        lines.append("")
        lines.append("Findings")
    for finding in shown:
        tag = _style(finding.severity, _COLORS[finding.severity], color)
        lines.append(f"  {finding.rule} {tag} [{finding.category}] {finding.name}")
        lines.append(_wrap(finding.message, "    "))
        if len(finding.layers) > 1:
            lines.append(_wrap("layers: " + ", ".join(finding.layers), "    "))
        for item in finding.causes:
            lines.append(_wrap(f"likely cause ({item['cause']}): {item['reason']}", "    "))
    fixes = []
    for finding in diagnosis.at_least("warning"):
        for fix in finding.fixes:
            if fix not in fixes:
                fixes.append(fix)
    recommendation = diagnosis.recommendation
    if recommendation and recommendation.get("recommended"):
        lines.append("")
        lines.append("Recommended (tested)")
        lines.append(_wrap(recommendation.get("reason", ""), "  "))
        for change in recommendation.get("changes", [])[:12]:
            before = change.get("from")
            lines.append(f"  - {change['layer']}: {change['change']} "
                         f"{'' if before is None else str(before) + ' -> '}{change['to']}")
        if recommendation.get("fixed_model_path"):
            lines.append(f"  fixed model written to {recommendation['fixed_model_path']}")
    elif fixes:
        lines.append("")
        lines.append("What to try")
        for fix in fixes:
            lines.append(f"  - {_FIX_TEXT[fix]}")
        if recommendation and not recommendation.get("recommended"):
            lines.append(_wrap(f"search: {recommendation.get('reason', '')}", "  "))
        elif recommendation is None:
            lines.append("  Run without --no-search to test these fixes on copies of the model.")
    return "\n".join(lines) + "\n"
