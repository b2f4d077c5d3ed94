"""Studies: one network trained in several variants and seeds (the optimizer study, `compare-optimizers`) or
one config with several seeds (`train --seeds`), each run an ordinary run folder inside one study folder.
config.py: the study; run.py: training it (population engine or one run after another) and continuing it;
report.py: the table, figures and TensorBoard margins."""

from fashionmlp.study.config import (
    CHANCE,
    DEFAULT_VARIANTS,
    FAILED_MARGIN,
    Study,
    default_study_dict,
    load_study,
    seeds_study,
    study_from_dict,
    study_from_options,
)
from fashionmlp.study.report import first_column, markdown_table, summarize, table_rows, unfinished
from fashionmlp.study.run import (
    ENGINES,
    StudyResult,
    VariantOutcome,
    choose_engine,
    read_study,
    resume_study,
    run_study,
)

__all__ = ["CHANCE", "DEFAULT_VARIANTS", "ENGINES", "FAILED_MARGIN", "Study", "StudyResult", "VariantOutcome",
           "choose_engine", "default_study_dict", "first_column", "load_study", "markdown_table", "read_study",
           "resume_study", "run_study", "seeds_study", "study_from_dict", "study_from_options", "summarize",
           "table_rows", "unfinished"]
