"""Real buggy training programs from published benchmarks, ported to Keras 3.

Each module re-types one program (a Stack Overflow question from DeepLocalize's
benchmark, which DeepDiagnosis also evaluates, or an AUTOTRAINER case) and says in
its docstring where it comes from, what its fault is according to the source and
what changed in the port.  A module exposes ``build()`` (the compiled faulty
model), ``data(seed)`` and, when the source gives one, ``build_fixed()`` (and
``data_fixed(seed)`` when the fix also changes the data), plus the constants read
by :func:`entries`.

``scripts/real_bugs/label.py`` trains each program and its fix with plain Keras to
record whether the failure happens here; ``scripts/real_bugs/run.py`` then asks
gradadvisor about every program whose failure reproduces.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Callable, Optional

MODULES = (
    "so_31880720", "so_31556268", "so_33969059", "so_34311586", "so_38648195",
    "so_44066044", "so_45337371", "so_45442843", "so_47352366", "so_48221692",
    "so_48385830", "so_48934338", "so_51930566", "so_52800582", "so_55328966",
    "so_59278771", "autotrainer_gradient_vanish", "autotrainer_dying_relu",
)


@dataclasses.dataclass(frozen=True)
class Entry:
    """One ported program.

    Attributes:
        name: A stable kebab-case name.
        family: Always ``"real-bugs"``.
        source: The citation (repository, commit and path; question URL).
        category: The diagnosis category the source's description of the fault
            maps to (``output_config``, ``vanishing_gradients``, ...).
        accepted: Categories that count as identifying the fault (the expected
            one first; others where the same fault shows that way too).
        fault: The fault in a sentence, as the source describes it.
        task: ``binary``, ``multiclass``, ``multilabel`` or ``regression``.
        symptom: ``no_learning`` or ``diverges``: what training shows.
        batch_size: The program's batch size.
        epochs: Epochs trained when labelling (``None`` when ``steps`` is given).
        steps: Training steps when the program counts steps, not epochs.
        fixed_batch_size, fixed_epochs: The fix's, when they differ.
        deepdiagnosis_identified: What DeepDiagnosis's artifact (Table 6) reports
            for the original program, or None when it is not in that table.
        build, data, build_fixed, data_fixed: The module's functions.
    """

    name: str
    family: str
    source: str
    category: str
    accepted: tuple
    fault: str
    task: str
    symptom: str
    batch_size: int
    epochs: Optional[float]
    steps: Optional[int]
    fixed_batch_size: int
    fixed_epochs: Optional[float]
    deepdiagnosis_identified: Optional[bool]
    build: Callable
    data: Callable
    build_fixed: Optional[Callable]
    data_fixed: Callable
    module: str


def _entry(module_name: str) -> Entry:
    module = importlib.import_module(f"{__name__}.{module_name}")
    batch_size = module.BATCH_SIZE
    epochs = getattr(module, "EPOCHS", None)
    return Entry(
        name=module.NAME, family="real-bugs", source=module.SOURCE,
        category=module.CATEGORY, accepted=tuple(module.ACCEPTED), fault=module.FAULT,
        task=module.TASK, symptom=module.SYMPTOM, batch_size=batch_size, epochs=epochs,
        steps=getattr(module, "STEPS", None),
        fixed_batch_size=getattr(module, "FIXED_BATCH_SIZE", batch_size),
        fixed_epochs=getattr(module, "FIXED_EPOCHS", epochs),
        deepdiagnosis_identified=getattr(module, "DEEPDIAGNOSIS_IDENTIFIED", None),
        build=module.build, data=module.data,
        build_fixed=getattr(module, "build_fixed", None),
        data_fixed=getattr(module, "data_fixed", module.data),
        module=module_name,
    )


def entries(names=None) -> list:
    """All ported programs, or those whose name or module is in ``names``."""
    chosen = [_entry(name) for name in MODULES]
    if names:
        wanted = set(names)
        chosen = [entry for entry in chosen if entry.name in wanted or entry.module in wanted]
    return chosen
