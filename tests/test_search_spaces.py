"""Search spaces in the experiment file: parsing, expansion into trials, located errors.

No Ray instance is started and no sweep runs: everything here is the driver-side
parsing and expansion (Ray Tune's variant generator only draws values).
"""

from __future__ import annotations

import math
from collections import Counter

import pytest

from lifelong.platform import search
from lifelong.platform.expand import trial_from_config
from lifelong.platform.search import Space, SpaceError, expand, parse_space, set_path
from lifelong.platform.spec import Experiment, SpecError, TrialSpec, parse_experiment


def parse(text: str) -> Experiment:
    return parse_experiment(text, file="exp.yaml")


def error_of(text: str) -> str:
    with pytest.raises(SpecError) as info:
        parse(text)
    return str(info.value)


def configs(exp: Experiment) -> list[tuple]:
    """One entry per configuration (the first seed of each), as (label, varied)."""
    first = exp.spec.seeds[0]
    return [(t.label, t.varied) for t in exp.trials() if t.seed == first]


def values_of(exp: Experiment, key: str) -> list:
    first = exp.spec.seeds[0]
    return [dict(t.varied)[key] for t in exp.trials() if t.seed == first]


def is_4_significant(value: float) -> bool:
    return float(f"{value:.4g}") == value


# ------------------------------------------------------------------ the kinds
def test_grid_gives_every_value_in_order() -> None:
    exp = parse("training:\n  lr: {grid: [0.3, 0.01, 0.2]}\nstrategies: [naive]\n")
    trials = exp.trials()
    assert [t.training["lr"] for t in trials] == [0.3, 0.01, 0.2]
    assert [t.label for t in trials] == [
        "naive [training.lr=0.3]",
        "naive [training.lr=0.01]",
        "naive [training.lr=0.2]",
    ]
    assert exp.spaces == {"training.lr": Space("grid", (0.3, 0.01, 0.2))}
    # the spec itself holds the first candidate
    assert exp.spec.training.lr == 0.3


def test_two_grids_give_their_product() -> None:
    exp = parse(
        "training:\n  lr: {grid: [0.1, 0.01]}\n  momentum: {grid: [0.0, 0.5, 0.9]}\n"
        "strategies: [naive]\n"
    )
    pairs = [(t.training["lr"], t.training["momentum"]) for t in exp.trials()]
    assert len(pairs) == 6
    assert set(pairs) == {(lr, m) for lr in (0.1, 0.01) for m in (0.0, 0.5, 0.9)}


def test_choice_is_drawn_num_samples_times_and_deduplicated() -> None:
    one = parse("training:\n  optimizer: {choice: [sgd, adam]}\nstrategies: [naive]\n")
    assert len(one.trials()) == 1
    assert one.trials()[0].training["optimizer"] in ("sgd", "adam")
    # 20 draws of a 2-value choice: the repeats are kept once
    many = parse(
        "num_samples: 20\ntraining:\n  optimizer: {choice: [sgd, adam]}\nstrategies: [naive]\n"
    )
    drawn = [t.training["optimizer"] for t in many.trials()]
    assert sorted(drawn) == ["adam", "sgd"]
    assert sorted(t.label for t in many.trials()) == [
        "naive [training.optimizer=adam]",
        "naive [training.optimizer=sgd]",
    ]


def test_choice_with_a_float_space_gives_num_samples_configurations() -> None:
    exp = parse(
        "num_samples: 5\ntraining:\n  optimizer: {choice: [sgd, adam]}\n"
        "  momentum: {uniform: [0.1, 0.9]}\nstrategies: [naive]\n"
    )
    trials = exp.trials()
    assert len(trials) == 5
    assert {t.training["optimizer"] for t in trials} <= {"sgd", "adam"}
    assert len({t.training["momentum"] for t in trials}) == 5


@pytest.mark.parametrize("kind", ["uniform", "loguniform"])
def test_float_spaces_draw_inside_the_bounds_rounded_to_4_digits(kind: str) -> None:
    exp = parse(
        f"num_samples: 12\ntraining:\n  lr: {{{kind}: [0.001, 0.1]}}\nstrategies: [naive]\n"
    )
    drawn = values_of(exp, "training.lr")
    assert len(drawn) == 12
    assert len(set(drawn)) == 12
    for v in drawn:
        assert isinstance(v, float)
        assert 0.001 <= v <= 0.1
        assert is_4_significant(v), v
    # the trial trains with exactly the value its label shows
    for t in exp.trials():
        assert t.label == f"naive [training.lr={t.training['lr']}]"


def test_loguniform_draws_spread_over_the_decades() -> None:
    exp = parse(
        "num_samples: 40\ntraining:\n  lr: {loguniform: [0.0001, 1.0]}\nstrategies: [naive]\n"
    )
    decades = Counter(math.floor(math.log10(v)) for v in values_of(exp, "training.lr"))
    # uniform draws on [1e-4, 1] would put ~all of 40 values in the top decade
    assert decades[-1] < 30
    assert set(decades) <= {-4, -3, -2, -1, 0}
    assert len([d for d in decades if d < -1]) >= 2


def test_randint_excludes_its_upper_bound() -> None:
    exp = parse(
        "num_samples: 60\ntraining:\n  batch_size: {randint: [1, 4]}\nstrategies: [naive]\n"
    )
    drawn = values_of(exp, "training.batch_size")
    assert sorted(drawn) == [1, 2, 3]
    assert all(type(v) is int for v in drawn)
    assert {t.training["batch_size"] for t in exp.trials()} == {1, 2, 3}


def test_randint_upper_bound_is_validated_as_b_minus_1() -> None:
    # epochs <= 10000: randint [1, 10001] draws at most 10000, so it is valid
    parse("training:\n  epochs: {randint: [1, 10001]}\nstrategies: [naive]\n")
    msg = error_of("training:\n  epochs: {randint: [1, 10002]}\nstrategies: [naive]\n")
    assert msg.startswith("exp.yaml:2: training.epochs.randint[1]: ")
    assert "10001" in msg


# --------------------------------------------------------------- determinism
RANDOM_FILE = """\
num_samples: 6
seeds: 2
training:
  lr: {loguniform: [0.0001, 0.1]}
  momentum: {uniform: [0.0, 0.9]}
  batch_size: {randint: [8, 64]}
strategies:
  - naive
  - ewc: {lambda: {uniform: [0.1, 100]}}
"""


def test_expansion_is_deterministic() -> None:
    first = [(t.label, t.seed, t.varied) for t in parse(RANDOM_FILE).trials()]
    again = [(t.label, t.seed, t.varied) for t in parse(RANDOM_FILE).trials()]
    assert first == again
    assert len(first) == 2 * 6 * 2


def test_search_seed_changes_the_draws() -> None:
    default = parse(RANDOM_FILE)
    explicit = parse("search_seed: 0\n" + RANDOM_FILE)
    other = parse("search_seed: 1\n" + RANDOM_FILE)
    assert configs(default) == configs(explicit)
    assert values_of(default, "training.lr") != values_of(other, "training.lr")
    assert values_of(default, "training.momentum") != values_of(other, "training.momentum")
    # only the draws change: the same number of configurations and seeds
    assert len(other.trials()) == len(default.trials()) == 24


def test_num_samples_multiplies_grid_points() -> None:
    exp = parse(
        "num_samples: 3\ntraining:\n  lr: {grid: [0.1, 0.01]}\n"
        "  momentum: {uniform: [0.0, 0.9]}\nstrategies: [naive]\n"
    )
    trials = exp.trials()
    assert len(trials) == 6
    assert Counter(t.training["lr"] for t in trials) == {0.1: 3, 0.01: 3}
    assert len({t.training["momentum"] for t in trials}) == 6
    for t in trials:
        assert t.label == (
            f"naive [training.lr={t.training['lr']}, training.momentum={t.training['momentum']}]"
        )


def test_num_samples_with_only_grid_spaces_is_an_error() -> None:
    msg = error_of(
        "seeds: 1\nnum_samples: 3\ntraining:\n  lr: {grid: [0.1, 0.01]}\nstrategies: [naive]\n"
    )
    assert msg.startswith("exp.yaml:2: num_samples: ")
    assert "random draws" in msg
    assert "must be 1" in msg
    assert "\n" not in msg


def test_num_samples_without_any_space_is_an_error() -> None:
    msg = error_of("strategies: [naive]\nnum_samples: 2\n")
    assert msg.startswith("exp.yaml:2: num_samples: ")


def test_num_samples_1_with_only_grids_is_fine() -> None:
    exp = parse("num_samples: 1\ntraining:\n  lr: {grid: [0.1, 0.01]}\nstrategies: [naive]\n")
    assert len(exp.trials()) == 2


# ------------------------------------------------------ trials and their labels
GRID_FILE = """\
seeds: [3, 7]
training:
  lr: {grid: [0.1, 0.01]}
strategies:
  - naive
  - ewc: {lambda: {grid: [1, 10]}}
"""


def test_trials_are_configurations_times_seeds() -> None:
    trials = parse(GRID_FILE).trials()
    assert len(trials) == (2 + 4) * 2
    by_label: dict[str, list[TrialSpec]] = {}
    for t in trials:
        by_label.setdefault(t.label, []).append(t)
    assert len(by_label) == 6
    for label, group in by_label.items():
        assert [t.seed for t in group] == [3, 7], label
        # every seed of a configuration has the same values
        assert len({(t.varied, str(t.training), str(t.strategies)) for t in group}) == 1
    # seeds are repeats of a configuration: consecutive in the list
    assert [t.seed for t in trials] == [3, 7] * 6
    assert len({t.trial_id for t in trials}) == 12


def test_labels_name_the_varied_values() -> None:
    labels = list(dict.fromkeys(t.label for t in parse(GRID_FILE).trials()))
    assert sorted(labels) == sorted(
        [
            "naive [training.lr=0.1]",
            "naive [training.lr=0.01]",
            "ewc [ewc.lambda=1.0, training.lr=0.1]",
            "ewc [ewc.lambda=10.0, training.lr=0.1]",
            "ewc [ewc.lambda=1.0, training.lr=0.01]",
            "ewc [ewc.lambda=10.0, training.lr=0.01]",
        ]
    )
    # file order: every naive configuration before any ewc one
    assert [lb.split(" ")[0] for lb in labels] == ["naive"] * 2 + ["ewc"] * 4


def test_trial_id_is_label_and_seed() -> None:
    ids = [t.trial_id for t in parse(GRID_FILE).trials()]
    assert ids[:2] == ["naive [training.lr=0.1]-seed3", "naive [training.lr=0.1]-seed7"]


def test_strategy_search_alone_and_int_shown_as_float() -> None:
    exp = parse("strategies:\n  - naive\n  - ewc: {lambda: {grid: [1, 10]}}\n")
    trials = exp.trials()
    assert [t.label for t in trials] == ["naive", "ewc [ewc.lambda=1.0]", "ewc [ewc.lambda=10.0]"]
    # a strategy with no search keeps its plain label and varies nothing
    assert trials[0].varied == ()
    assert trials[0].base_label == "naive"
    # values as validated: int 10 for a float field is 10.0
    assert trials[2].varied == (("strategy.ewc.lambda", 10.0),)
    assert type(trials[2].varied[0][1]) is float
    assert trials[2].strategies[0].params["lambda"] == 10.0
    assert trials[2].base_label == "ewc"
    assert exp.group_spaces == ({}, {"strategy.ewc.lambda": Space("grid", (1, 10))})
    assert exp.spaces == {}


def test_training_int_candidates_of_a_float_field_show_as_floats() -> None:
    trials = parse("training:\n  lr: {grid: [1, 2]}\nstrategies: [naive]\n").trials()
    assert [t.label for t in trials] == ["naive [training.lr=1.0]", "naive [training.lr=2.0]"]
    assert [type(t.training["lr"]) for t in trials] == [float, float]


def test_label_keys_are_sorted_by_displayed_name() -> None:
    # by param key model.hidden < strategy.ewc.lambda; as shown ewc.lambda < model.hidden
    exp = parse(
        "model:\n  hidden: {grid: [[16], [32, 32]]}\n"
        "strategies:\n  - ewc: {lambda: {grid: [1, 10]}}\n"
    )
    trials = exp.trials()
    assert len(trials) == 4
    assert {t.label for t in trials} == {
        "ewc [ewc.lambda=1.0, model.hidden=[16]]",
        "ewc [ewc.lambda=10.0, model.hidden=[16]]",
        "ewc [ewc.lambda=1.0, model.hidden=[32, 32]]",
        "ewc [ewc.lambda=10.0, model.hidden=[32, 32]]",
    }
    for t in trials:
        assert [k for k, _ in t.varied] == ["strategy.ewc.lambda", "model.hidden"]
        assert t.model["hidden"] == dict(t.varied)["model.hidden"]


def test_a_key_that_does_not_vary_is_left_out_of_the_label() -> None:
    exp = parse(
        "num_samples: 3\ntraining:\n  lr: {choice: [0.05]}\n  momentum: {grid: [0.1, 0.5]}\n"
        "strategies: [naive]\n"
    )
    trials = exp.trials()
    assert [t.label for t in trials] == [
        "naive [training.momentum=0.1]",
        "naive [training.momentum=0.5]",
    ]
    assert [t.varied for t in trials] == [
        (("training.momentum", 0.1),),
        (("training.momentum", 0.5),),
    ]
    # the unvaried value is still applied
    assert {t.training["lr"] for t in trials} == {0.05}


def test_trial_sections_hold_the_resolved_configuration() -> None:
    exp = parse(
        "scenario:\n  source: digits\n  n_experiences: {grid: [2, 5]}\n"
        "model:\n  hidden: [16]\ntraining:\n  epochs: 3\n  lr: {grid: [0.1, 0.01]}\n"
        "strategies: [naive]\n"
    )
    trials = exp.trials()
    assert len(trials) == 4
    for t in trials:
        values = dict(t.varied)
        assert set(values) == {"scenario.n_experiences", "training.lr"}
        assert t.scenario["n_experiences"] == values["scenario.n_experiences"]
        assert t.scenario["source"] == "digits"
        assert t.training["lr"] == values["training.lr"]
        # the rest of each section: the file's values and the defaults
        assert t.training["epochs"] == 3
        assert t.training["batch_size"] == 32
        assert t.training["optimizer"] == "sgd"
        assert t.model == {"name": "mlp", "hidden": [16], "multi_head": None}
    assert {(t.scenario["n_experiences"], t.training["lr"]) for t in trials} == {
        (2, 0.1),
        (2, 0.01),
        (5, 0.1),
        (5, 0.01),
    }


def test_a_plain_experiment_has_no_varied_values() -> None:
    exp = parse("seeds: 2\ntraining:\n  lr: 0.2\nstrategies: [naive, l2]\n")
    trials = exp.trials()
    assert [t.trial_id for t in trials] == ["naive-seed0", "naive-seed1", "l2-seed0", "l2-seed1"]
    assert all(t.varied == () for t in trials)
    assert all(t.training["lr"] == 0.2 for t in trials)
    assert exp.spaces == {}
    assert exp.group_spaces == ({}, {})


def test_composed_strategy_hyperparameter_is_searched() -> None:
    trials = parse("strategies:\n  - [l2: {lambda: {grid: [1, 2]}}, naive]\n").trials()
    assert [t.label for t in trials] == ["l2+naive [l2.lambda=1.0]", "l2+naive [l2.lambda=2.0]"]
    assert [t.strategies[0].params["lambda"] for t in trials] == [1.0, 2.0]
    assert [s.name for s in trials[0].strategies] == ["l2", "naive"]


def test_same_strategy_twice_with_searches_keeps_labels_apart() -> None:
    trials = parse(
        "strategies:\n  - ewc: {lambda: {grid: [1, 10]}}\n"
        "  - ewc: {lambda: {grid: [1, 10]}, mode: online}\n"
    ).trials()
    assert [t.label for t in trials] == [
        "ewc [ewc.lambda=1.0]",
        "ewc [ewc.lambda=10.0]",
        "ewc(mode=online) [ewc.lambda=1.0]",
        "ewc(mode=online) [ewc.lambda=10.0]",
    ]
    assert [t.strategies[0].params["mode"] for t in trials] == ["separate"] * 2 + ["online"] * 2


def test_trial_round_trips_through_to_dict() -> None:
    trial = parse(GRID_FILE).trials()[-1]
    assert TrialSpec.from_dict(trial.to_dict()) == trial


def test_trial_from_config_applies_proposed_values() -> None:
    base = parse("training:\n  lr: {uniform: [0.01, 0.5]}\nstrategies: [naive]\n").trials()[0]
    trial = trial_from_config({"trial": base.to_dict(), "values": {"training.lr": 0.25}})
    assert trial.label == "naive [training.lr=0.25]"
    assert trial.training["lr"] == 0.25
    assert trial.varied == (("training.lr", 0.25),)
    assert trial_from_config({"trial": base.to_dict()}) == base


# -------------------------------------------------------------------- errors
def located(text: str) -> str:
    """The one rendered problem of ``text`` (asserting there is only one)."""
    msg = error_of(text)
    assert "\n" not in msg, msg
    return msg


@pytest.mark.parametrize(
    ("space", "field", "message"),
    [
        ("{grid: 0.1}", "grid", "grid takes a non-empty list, got 0.1"),
        ("{grid: []}", "grid", "grid takes a non-empty list, got []"),
        ("{choice: []}", "choice", "choice takes a non-empty list, got []"),
        ("{grid: [0.1, 0.2, 0.1]}", "grid", "a value is listed twice in [0.1, 0.2, 0.1]"),
        ("{choice: [0.1, 0.1]}", "choice", "a value is listed twice in [0.1, 0.1]"),
        ("{uniform: [0.5, 0.1]}", "uniform", "uniform needs a < b, got [0.5, 0.1]"),
        ("{uniform: [0.5, 0.5]}", "uniform", "uniform needs a < b, got [0.5, 0.5]"),
        ("{loguniform: [0, 0.1]}", "loguniform", "loguniform needs 0 < a < b, got [0, 0.1]"),
        ("{loguniform: [-1, 0.1]}", "loguniform", "loguniform needs 0 < a < b, got [-1, 0.1]"),
        (
            "{uniform: [0.1, 0.2, 0.3]}",
            "uniform",
            "uniform takes two bounds [a, b], got [0.1, 0.2, 0.3]",
        ),
        ("{loguniform: [0.1]}", "loguniform", "loguniform takes two bounds [a, b], got [0.1]"),
        (
            "{uniform: [low, 0.2]}",
            "uniform",
            "uniform takes two finite numbers [a, b], got ['low', 0.2]",
        ),
        (
            "{uniform: [0.1, .inf]}",
            "uniform",
            "uniform takes two finite numbers [a, b], got [0.1, inf]",
        ),
    ],
)
def test_malformed_space_on_lr_is_located(space: str, field: str, message: str) -> None:
    msg = located(f"seeds: 1\ntraining:\n  epochs: 1\n  lr: {space}\nstrategies: [naive]\n")
    assert msg == f"exp.yaml:4: training.lr.{field}: {message}"


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ("{randint: [1.5, 8]}", "randint takes two integers [a, b], got [1.5, 8]"),
        ("{randint: [1, 8.0]}", "randint takes two integers [a, b], got [1, 8.0]"),
        ("{randint: [true, 8]}", "randint takes two integers [a, b], got [True, 8]"),
        ("{randint: [8, 8]}", "randint [a, b] draws a..b-1 and needs a < b, got [8, 8]"),
        ("{randint: [9, 8]}", "randint [a, b] draws a..b-1 and needs a < b, got [9, 8]"),
        ("{randint: [1, 2, 3]}", "randint takes two bounds [a, b], got [1, 2, 3]"),
    ],
)
def test_malformed_randint_is_located(space: str, message: str) -> None:
    msg = located(f"seeds: 1\ntraining:\n  batch_size: {space}\nstrategies: [naive]\n")
    assert msg == f"exp.yaml:3: training.batch_size.randint: {message}"


def test_malformed_space_in_block_style_points_at_the_kind() -> None:
    msg = located(
        "seeds: 1\ntraining:\n  lr:\n    grid:\n      - 0.1\n      - 0.1\nstrategies: [naive]\n"
    )
    assert msg == "exp.yaml:4: training.lr.grid: a value is listed twice in [0.1, 0.1]"


def test_malformed_strategy_space_is_located() -> None:
    msg = located("seeds: 1\nstrategies:\n  - naive\n  - ewc:\n      lambda: {uniform: [5, 1]}\n")
    assert msg == "exp.yaml:5: strategies[1].ewc.lambda.uniform: uniform needs a < b, got [5, 1]"


@pytest.mark.parametrize(
    ("text", "line", "section"),
    [
        ("seeds: 1\nmodel: {grid: [mlp, cnn]}\nstrategies: [naive]\n", 2, "model"),
        ("seeds: 1\nstrategies: [naive]\ntraining:\n  {grid: [1, 2]}\n", 3, "training"),
        ("strategies: [naive]\nscenario:\n  choice: [a, b]\n", 2, "scenario"),
    ],
)
def test_space_on_a_whole_section_is_an_error(text: str, line: int, section: str) -> None:
    assert (
        located(text)
        == f"exp.yaml:{line}: {section}: a search space goes on a field, not a section"
    )


def test_invalid_grid_candidate_points_at_the_candidate() -> None:
    msg = located(
        "seeds: 1\ntraining:\n  epochs: 1\n  lr: {grid: [0.1, -1]}\nstrategies: [naive]\n"
    )
    assert msg == "exp.yaml:4: training.lr.grid[1]: Input should be greater than 0 (got -1)"


def test_invalid_first_candidate_points_at_index_0() -> None:
    msg = located("seeds: 1\ntraining:\n  lr: {grid: [-1, 0.1]}\nstrategies: [naive]\n")
    assert msg == "exp.yaml:3: training.lr.grid[0]: Input should be greater than 0 (got -1)"


def test_invalid_candidate_in_block_style_points_at_its_line() -> None:
    text = "seeds: 1\ntraining:\n  lr:\n    grid:\n      - 0.1\n      - 0.2\n      - -1\n"
    msg = located(text + "strategies: [naive]\n")
    assert msg == "exp.yaml:7: training.lr.grid[2]: Input should be greater than 0 (got -1)"


def test_invalid_strategy_candidate_points_at_the_candidate() -> None:
    msg = located("strategies: [{ewc: {lambda: {grid: [1, -5]}}}]\n")
    assert msg == (
        "exp.yaml:1: strategies[0].ewc.lambda.grid[1]: "
        "Input should be greater than or equal to 0 (got -5)"
    )
    msg = located("seeds: 1\nstrategies:\n  - naive\n  - ewc:\n      lambda: {grid: [1, -5]}\n")
    assert msg.startswith("exp.yaml:5: strategies[1].ewc.lambda.grid[1]: ")


def test_invalid_composed_strategy_candidate_points_at_the_candidate() -> None:
    msg = located("seeds: 1\nstrategies:\n  - [naive, l2: {lambda: {choice: [1, -2]}}]\n")
    assert msg.startswith("exp.yaml:3: strategies[0][1].l2.lambda.choice[1]: ")
    assert "greater than or equal to 0 (got -2)" in msg


@pytest.mark.parametrize(
    ("space", "where", "message"),
    [
        ("lr: {uniform: [0.1, 200]}", "training.lr.uniform[1]", "less than or equal to 100"),
        ("lr: {loguniform: [0.001, 101]}", "training.lr.loguniform[1]", "less than or equal"),
        ("lr: {uniform: [0, 0.5]}", "training.lr.uniform[0]", "greater than 0"),
        ("momentum: {uniform: [-0.5, 0.5]}", "training.momentum.uniform[0]", "greater than or"),
        ("momentum: {uniform: [0.5, 1]}", "training.momentum.uniform[1]", "less than 1"),
        ("epochs: {randint: [0, 3]}", "training.epochs.randint[0]", "greater than or equal to 1"),
    ],
)
def test_range_bounds_outside_the_field_are_located(space: str, where: str, message: str) -> None:
    msg = located(f"seeds: 1\ntraining:\n  {space}\nstrategies: [naive]\n")
    assert msg.startswith(f"exp.yaml:3: {where}: ")
    assert message in msg


def test_unknown_choice_candidate_is_located() -> None:
    msg = located("seeds: 1\nmodel:\n  name: {choice: [mlp, nope]}\nstrategies: [naive]\n")
    assert msg.startswith("exp.yaml:3: model.name.choice[1]: unknown model 'nope'; known: ")


def test_one_problem_per_bad_space() -> None:
    msg = error_of(
        "seeds: 1\ntraining:\n  lr: {grid: [0.1, -1, -2]}\n  momentum: {grid: [0.1, 2]}\n"
        "strategies: [naive]\n"
    )
    assert msg.splitlines() == [
        "exp.yaml:3: training.lr.grid[1]: Input should be greater than 0 (got -1)",
        "exp.yaml:4: training.momentum.grid[1]: Input should be less than 1 (got 2)",
    ]


def test_optuna_with_a_grid_is_an_error_at_the_grid() -> None:
    msg = located(
        "seeds: 1\ntune: {search: optuna}\ntraining:\n  epochs: 1\n  lr: {grid: [0.1, 0.01]}\n"
        "strategies: [naive]\n"
    )
    assert msg.startswith("exp.yaml:5: training.lr.grid: optuna draws configurations")
    assert "use choice" in msg


def test_optuna_with_a_strategy_grid_is_an_error_at_the_grid() -> None:
    msg = located(
        "seeds: 1\ntune: {search: optuna}\nstrategies:\n  - ewc:\n      lambda: {grid: [1, 10]}\n"
    )
    assert msg.startswith("exp.yaml:5: strategies[0].ewc.lambda.grid: optuna draws")


def test_optuna_with_choice_is_accepted() -> None:
    exp = parse(
        "seeds: 1\ntune: {search: optuna}\ntraining:\n  lr: {choice: [0.1, 0.01]}\n"
        "strategies: [naive]\n"
    )
    assert exp.spec.tune is not None and exp.spec.tune.search == "optuna"
    assert exp.spaces == {"training.lr": Space("choice", (0.1, 0.01))}


def test_random_tune_search_accepts_a_grid() -> None:
    exp = parse(
        "seeds: 1\ntune: {search: random}\ntraining:\n  lr: {grid: [0.1, 0.01]}\n"
        "strategies: [naive]\n"
    )
    assert exp.spaces["training.lr"].kind == "grid"


# ------------------------------------------------- found by these tests, fixed
def test_uniform_on_an_integer_field_is_rejected_or_gives_integers() -> None:
    text = "num_samples: 3\ntraining:\n  epochs: {uniform: [1, 5]}\nstrategies: [naive]\n"
    try:
        exp = parse(text)
    except SpecError as e:  # the fix could reject it where it is written
        assert str(e).startswith("exp.yaml:3: training.epochs.uniform")
        return
    assert all(type(t.training["epochs"]) is int for t in exp.trials())


def test_candidates_equal_after_validation_do_not_duplicate_trials() -> None:
    text = "training:\n  lr: {grid: [1, 1.0]}\nstrategies: [naive]\n"
    try:
        exp = parse(text)
    except SpecError as e:
        assert "training.lr.grid" in str(e)
        return
    ids = [t.trial_id for t in exp.trials()]
    assert len(ids) == len(set(ids)), ids


# --------------------------------------------------- lifelong.platform.search
def test_parse_space_kinds() -> None:
    assert parse_space({"grid": [1, "a", [2]]}, ("x",)) == Space("grid", (1, "a", [2]))
    assert parse_space({"choice": [True, False]}, ()) == Space("choice", (True, False))
    uniform = parse_space({"uniform": [0, 1]}, ())
    assert uniform == Space("uniform", (0.0, 1.0))
    assert [type(a) for a in uniform.args] == [float, float]
    assert parse_space({"loguniform": [1e-4, 1]}, ()) == Space("loguniform", (1e-4, 1.0))
    randint = parse_space({"randint": [2, 9]}, ())
    assert randint == Space("randint", (2, 9))
    assert [type(a) for a in randint.args] == [int, int]


def test_parse_space_error_path_ends_with_the_kind() -> None:
    with pytest.raises(SpaceError) as info:
        parse_space({"uniform": [3, 1]}, ("training", "lr"))
    assert info.value.path == ("training", "lr", "uniform")
    assert info.value.message == "uniform needs a < b, got [3, 1]"
    with pytest.raises(SpaceError) as info:
        parse_space({"grid": list(range(10_001))}, ("p",))
    assert info.value.message == "at most 10000 values, got 10001"
    # distinct by value as written, including types: [1] and 1 are different values
    assert parse_space({"grid": [1, [1], "1"]}, ()).args == (1, [1], "1")


def test_space_candidates() -> None:
    assert Space("grid", (5, 6, 7)).candidates() == [(0, 5), (1, 6), (2, 7)]
    assert Space("choice", ("a",)).candidates() == [(0, "a")]
    assert Space("uniform", (0.1, 0.9)).candidates() == [(0, 0.1), (1, 0.9)]
    assert Space("loguniform", (0.01, 1.0)).candidates() == [(0, 0.01), (1, 1.0)]
    # randint draws a..b-1: the largest value it can draw is checked, not b
    assert Space("randint", (1, 4)).candidates() == [(0, 1), (1, 3)]


def test_space_random_and_to_json() -> None:
    assert not Space("grid", (1, 2)).random
    assert all(Space(k, (1, 2)).random for k in ("choice", "uniform", "loguniform", "randint"))
    assert Space("uniform", (0.1, 0.5)).to_json() == {"uniform": [0.1, 0.5]}
    assert Space("grid", ("a", "b")).to_json() == {"grid": ["a", "b"]}


def test_is_space() -> None:
    assert search.is_space({"grid": [1]})
    assert search.is_space({"randint": "anything"})  # malformed, but written as a space
    assert not search.is_space({"grid": [1], "choice": [2]})
    assert not search.is_space({"lambda": 1.0})
    assert not search.is_space([{"grid": [1]}])
    assert not search.is_space("grid")


def test_set_path_copies_and_does_not_mutate() -> None:
    tree = {"a": {"b": 1, "c": [10, {"d": 2}]}, "e": 3}
    snapshot = {"a": {"b": 1, "c": [10, {"d": 2}]}, "e": 3}
    out = set_path(tree, ("a", "c", 1, "d"), 99)
    assert out == {"a": {"b": 1, "c": [10, {"d": 99}]}, "e": 3}
    assert tree == snapshot
    assert out["a"] is not tree["a"]
    assert out["a"]["c"] is not tree["a"]["c"]
    assert out["e"] == 3
    # missing mappings on the way are created
    assert set_path({}, ("x", "y"), 1) == {"x": {"y": 1}}
    assert set_path(tree, (), "whole") == "whole"
    assert tree == snapshot


def test_expand_of_no_spaces_is_one_empty_configuration() -> None:
    assert expand({}, 1, 0) == [{}]
    assert expand({}, 5, 123) == [{}]


def test_expand_grid_in_order_and_stable() -> None:
    spaces = {"k": Space("grid", (3, 1, 2))}
    assert expand(spaces, 1, 0) == [{"k": 3}, {"k": 1}, {"k": 2}]
    assert expand(spaces, 1, 99) == [{"k": 3}, {"k": 1}, {"k": 2}]
    # every grid point again for each sample: kept once
    assert expand(spaces, 4, 0) == [{"k": 3}, {"k": 1}, {"k": 2}]


def test_expand_draws_plain_python_values() -> None:
    out = expand(
        {
            "f": Space("uniform", (0.0, 1.0)),
            "i": Space("randint", (0, 1000)),
            "c": Space("choice", ("x", "y", "z")),
        },
        8,
        7,
    )
    assert len(out) == 8
    assert out == expand(
        {
            "c": Space("choice", ("x", "y", "z")),
            "i": Space("randint", (0, 1000)),
            "f": Space("uniform", (0.0, 1.0)),
        },
        8,
        7,
    )
    for config in out:
        assert sorted(config) == ["c", "f", "i"]
        assert type(config["f"]) is float and 0.0 <= config["f"] <= 1.0
        assert is_4_significant(config["f"])
        assert type(config["i"]) is int and 0 <= config["i"] < 1000
        assert config["c"] in ("x", "y", "z")
    assert expand({"f": Space("uniform", (0.0, 1.0))}, 3, 1) != expand(
        {"f": Space("uniform", (0.0, 1.0))}, 3, 2
    )


def test_rounding_keeps_draws_inside_the_bounds() -> None:
    space = Space("uniform", (0.5, 0.99999))
    # 0.999996 rounds to 1.0 at 4 digits, outside [a, b]: kept at b
    assert search._rounded(0.999996, space) == 0.99999
    assert search._rounded(0.123456, Space("uniform", (0.0, 1.0))) == 0.1235
    assert search._rounded(0.5000001, Space("loguniform", (0.5, 1.0))) == 0.5
    assert search._rounded(7, Space("randint", (0, 10))) == 7


def test_value_text() -> None:
    assert search.value_text(0.1) == "0.1"
    assert search.value_text(10.0) == "10.0"
    assert search.value_text("adam") == "adam"
    assert search.value_text([32, 32]) == "[32, 32]"
    assert search.value_text({"a": 1}) == '{"a": 1}'


def test_extract_spaces_plain_data_has_first_candidates() -> None:
    raw = {
        "training": {"lr": {"uniform": [0.1, 0.5]}, "epochs": 2},
        "strategies": ["naive", {"ewc": {"lambda": {"choice": [3, 4]}}}],
    }
    found = search.extract_spaces(raw)
    assert found.plain == {
        "training": {"lr": 0.1, "epochs": 2},
        "strategies": ["naive", {"ewc": {"lambda": 3}}],
    }
    assert raw["training"]["lr"] == {"uniform": [0.1, 0.5]}  # not mutated
    assert found.keys == {
        ("training", "lr"): "training.lr",
        ("strategies", 1, "ewc", "lambda"): "strategy.ewc.lambda",
    }
    assert found.group == {("training", "lr"): None, ("strategies", 1, "ewc", "lambda"): 1}
    assert found.global_spaces() == {"training.lr": Space("uniform", (0.1, 0.5))}
    assert found.group_spaces(1) == {"strategy.ewc.lambda": Space("choice", (3, 4))}
    assert found.group_spaces(0) == {}
    assert found.has_random()
    assert found.problems == []
    assert found.locate(("training", "lr")) == ("training", "lr", "uniform", 0)
    assert found.locate(("training", "epochs")) == ("training", "epochs")
