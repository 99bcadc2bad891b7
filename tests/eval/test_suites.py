"""The generated reasoning suites: determinism, independent checks, the difficulty knob, the splits,
SCAN's semantics, prompts and scoring."""

from __future__ import annotations

import ast
import re

import pytest

from loom.errors import ConfigError
from loom.eval.suites import SUITES, Item, format_prompt, get_suite, score, training_text
from loom.eval.suites.arithmetic import add_digit_strings, multiply_digit_strings
from loom.eval.suites.code_output import program_statements
from loom.eval.suites.letters import WORDS
from loom.eval.suites.scan import (
    SCAN_MIN_TEST_ACTIONS,
    SCAN_TRAIN_MAX_ACTIONS,
    SCAN_VERBS,
    ScanCommand,
    ScanPhrase,
    ScanVerb,
    scan_actions,
)

NAMES = list(SUITES)
# A small, the default and a large difficulty of each suite.
DIFFICULTIES = {
    "addition": [1, 3, 15],
    "multiplication": [1, 2, 6],
    "last_letters": [1, 4, 12],
    "last_letter": [3, 5, 9],
    "concat": [2, 5],
    "scan": [SCAN_MIN_TEST_ACTIONS, 30, 48],
    "word_problems": [1, 3, 10],
    "code_output": [1, 4, 10],
    "sum_list": [2, 4, 16],
    "halve_or_triple": [1, 4, 16],
    "doubling": [1, 4, 16],
    "step": [1, 2, 6],
}
# code_output runs every item in the sandbox: fewer of them keep the file fast.
N = {name: 8 if name == "code_output" else 25 for name in NAMES}


def corrupt(answer: str) -> str:
    """The answer with its last letter or digit changed (digits +1, letters to the next one)."""
    i = max(i for i, ch in enumerate(answer) if ch.isalnum())
    ch = answer[i]
    if ch.isdigit():
        new = str((int(ch) + 1) % 10)
    else:
        base = "a" if ch.islower() else "A"
        new = chr(ord(base) + (ord(ch) - ord(base) + 1) % 26)
    return answer[:i] + new + answer[i + 1 :]


def program_of(item: Item) -> str:
    return re.fullmatch(r"What does this Python program print\?\n```\n(.*)\n```", item.question, re.DOTALL).group(1)


def test_suite_names_and_order():
    assert NAMES == [
        "addition",
        "multiplication",
        "last_letters",
        "last_letter",
        "concat",
        "scan",
        "word_problems",
        "code_output",
        "sum_list",
        "halve_or_triple",
        "doubling",
        "step",
    ]
    for name, suite in SUITES.items():
        assert suite.name == name and suite.description
        assert suite.answer_chars() >= 4
        suite.resolve_difficulty("test", None)  # the default is valid


@pytest.mark.parametrize("name", NAMES)
def test_items_are_deterministic_for_a_seed(name):
    suite = SUITES[name]
    n = 5 if name == "code_output" else 20
    first = suite.items("test", n, seed=3)
    assert first == suite.items("test", n, seed=3)
    assert first != suite.items("test", n, seed=4)
    assert len(first) == n
    assert [item.id for item in first] == [f"{name}/test/{first[0].difficulty}/{i}" for i in range(n)]
    assert suite.items("train", 0) == []


@pytest.mark.parametrize("name", NAMES)
def test_every_item_passes_the_independent_checker_and_a_corrupted_one_fails(name):
    suite = SUITES[name]
    for split in ("train", "test"):
        for difficulty in DIFFICULTIES[name]:
            for item in suite.items(split, N[name], difficulty, seed=1):
                assert item.answer == item.answer.strip() and "\n" not in item.answer and item.answer
                assert len(item.answer) <= suite.answer_chars(difficulty)
                assert suite.check(item), item
                for wrong in (item.answer + "x", corrupt(item.answer)):
                    assert not suite.check(Item(item.suite, item.id, item.question, wrong, item.difficulty)), item


@pytest.mark.parametrize("name", NAMES)
def test_train_and_test_are_disjoint(name):
    suite = SUITES[name]
    n = {"code_output": 10, "last_letter": 8}.get(name, 60)  # five-letter words: 21 train, 9 test
    train = {item.question for item in suite.items("train", n, seed=0)}
    test = {item.question for item in suite.items("test", n, seed=0)}
    assert len(train) == len(test) == n
    assert not train & test


def test_the_hash_split_holds_across_seeds():
    suite = SUITES["last_letters"]
    test = {item.question for item in suite.items("test", 50, 2, seed=0)}
    for seed in range(3):
        assert not test & {item.question for item in suite.items("train", 200, 2, seed=seed)}


def test_small_spaces_repeat_instead_of_failing():
    items = SUITES["last_letter"].items("test", 40, 9)  # 27 words of nine letters, a fifth on the test side
    assert len(items) == 40 and len({item.question for item in items}) < 40
    for length in range(3, 10):
        assert SUITES["last_letter"].items("test", 3, length)


# ---------------------------------------------------------------------------------------------
# The difficulty knob


@pytest.mark.parametrize("digits", [1, 3, 15])
@pytest.mark.parametrize("name", ["addition", "multiplication"])
def test_arithmetic_operands_have_n_digits(name, digits):
    for item in SUITES[name].items("test", 30, digits):
        a, b = re.findall(r"\d+", item.question)
        assert len(a) == len(b) == digits and a[0] != "0" and b[0] != "0"
        assert item.difficulty == digits


def test_digit_string_arithmetic():
    assert add_digit_strings("999", "1") == "1000"
    assert add_digit_strings("0", "0") == "0"
    assert multiply_digit_strings("99", "99") == "9801"
    assert multiply_digit_strings("120", "10") == "1200"
    assert multiply_digit_strings("123456789", "987654321") == str(123456789 * 987654321)


def test_letter_suites_follow_their_difficulty():
    for k in (1, 4, 12):
        for item in SUITES["last_letters"].items("test", 20, k):
            assert len(re.search(r'"(.*)"', item.question).group(1).split()) == k == len(item.answer)
    for length in (3, 9):
        for item in SUITES["last_letter"].items("train", 10, length):
            assert len(re.search(r'"(.*)"', item.question).group(1)) == length
    for pieces in (2, 5):
        for item in SUITES["concat"].items("train", 20, pieces):
            assert len(re.findall(r'"[a-z]+"', item.question)) == pieces
    assert len(WORDS) == len(set(WORDS)) == 200 and all(3 <= len(w) <= 9 and w.isalpha() for w in WORDS)


def test_letter_suites_exact_text():
    question = 'Take the last letter of each word in "apple river stone" and join them.'
    item = Item("last_letters", "x", question, "ere", 3)
    assert SUITES["last_letters"].check(item)
    assert SUITES["last_letter"].check(Item("last_letter", "x", 'What is the last letter of "river"?', "r", 5))
    assert SUITES["concat"].check(Item("concat", "x", 'Join "ab" and "c".', "abc", 2))
    assert SUITES["concat"].check(Item("concat", "x", 'Join "ab", "and" and "c".', "abandc", 3))
    assert not SUITES["concat"].check(Item("concat", "x", 'Join "ab" and "c".', "cab", 2))
    assert not SUITES["last_letter"].check(Item("addition", "x", 'What is the last letter of "river"?', "r", 5))


def test_scan_length_split():
    suite = SUITES["scan"]
    for difficulty in (SCAN_MIN_TEST_ACTIONS, 30, 48):
        for item in suite.items("test", 40, difficulty):
            assert SCAN_TRAIN_MAX_ACTIONS < len(item.answer.split()) <= difficulty
    assert {len(i.answer.split()) for i in suite.items("test", 20, SCAN_MIN_TEST_ACTIONS)} == {24}
    train = suite.items("train", 100, 48)
    assert all(len(item.answer.split()) <= SCAN_TRAIN_MAX_ACTIONS for item in train)
    assert train[0].difficulty == SCAN_TRAIN_MAX_ACTIONS and train[0].id.startswith("scan/train/22/")
    assert all(len(item.answer.split()) <= 6 for item in suite.items("train", 50, 6))
    with pytest.raises(ConfigError, match="none has 23"):
        suite.items("test", 1, 23)
    with pytest.raises(ConfigError, match="<= 48"):
        suite.items("test", 1, 49)


def test_word_problems_have_one_sentence_per_step():
    kinds = set()
    for steps in (1, 3, 10):
        for item in SUITES["word_problems"].items("test", 30, steps):
            sentences = re.split(r"(?<=[.?]) ", item.question)
            assert len(sentences) == steps + 2  # the start, the steps, the question
            kinds.add(item.answer.startswith("["))
            if item.answer.startswith("["):
                assert ast.literal_eval(item.answer)  # a non-empty list
            else:
                assert int(item.answer) >= 0
    assert kinds == {True, False}


def test_word_problems_exact_text():
    suite = SUITES["word_problems"]
    story = (
        "Ava has 11 marbles. She buys 3 bags of 4 marbles each. She gives 5 marbles to Ben. "
        "She loses half of her marbles. Ben gives her 3 marbles. How many marbles does Ava have now?"
    )
    assert suite.check(Item("word_problems", "x", story, "12", 4))
    odd = "Ava has 11 marbles. She loses half of her marbles. How many marbles does Ava have now?"
    assert not suite.check(Item("word_problems", "x", odd, "5", 1))
    lists = "Start with the list [3, 8, 1]. Append 5. Remove the first item. Reverse the list. What is the list now?"
    assert suite.check(Item("word_problems", "x", lists, "[5, 1, 8]", 3))
    assert not suite.check(Item("word_problems", "x", lists, "[5,1,8]", 3))


def test_code_output_statements_and_nesting():
    suite = SUITES["code_output"]
    nested_seen = False
    for statements in (1, 4, 10):
        for item in suite.items("train", 10, statements):
            program = program_of(item)
            assert program_statements(program) == statements
            assert program.splitlines()[-1].startswith("print(") and program.count("print(") == 1
            loops = [node for node in ast.walk(ast.parse(program)) if isinstance(node, ast.For)]
            nested = any(n is not loop and isinstance(n, ast.For) for loop in loops for n in ast.walk(loop))
            assert not nested or statements >= 6
            nested_seen |= nested
    assert nested_seen


def test_code_output_sandbox_truth_equals_the_in_process_checker():
    from loom.sandbox import run_python

    suite = SUITES["code_output"]
    for item in suite.items("test", 6, 6, seed=5):
        result = run_python(program_of(item))
        assert result.passed and result.stdout == item.answer + "\n"
        assert suite.check(item)
    program = 'xs = [1, 2]\nfor i in range(3):\n    xs.append(i * 2)\ns = "ab" + str(sum(xs))\nprint(s[::-1], len(xs))'
    item = Item("code_output", "x", f"What does this Python program print?\n```\n{program}\n```", "9ba 5", 4)
    assert run_python(program).stdout == "9ba 5\n" and suite.check(item)
    failing = Item("code_output", "x", "What does this Python program print?\n```\nprint(1 // 0)\n```", "0", 1)
    assert not suite.check(failing)


# ---------------------------------------------------------------------------------------------
# SCAN semantics (Lake & Baroni 2018), by the checker's interpreter and the generator's trees

JL, JR = ["LTURN", "JUMP"], ["RTURN", "JUMP"]
SCAN_CASES = [
    ("jump", ["JUMP"]),
    ("jump left", JL),
    ("turn left", ["LTURN"]),
    ("turn right twice", ["RTURN", "RTURN"]),
    ("jump around left twice", JL * 8),
    ("walk around right", ["RTURN", "WALK"] * 4),
    ("turn around right", ["RTURN"] * 4),
    ("turn around left thrice", ["LTURN"] * 12),
    ("turn opposite left", ["LTURN", "LTURN"]),
    ("look opposite right twice", ["RTURN", "RTURN", "LOOK"] * 2),
    ("walk after run", ["RUN", "WALK"]),
    ("walk and run", ["WALK", "RUN"]),
    ("jump thrice after turn left twice", ["LTURN", "LTURN", "JUMP", "JUMP", "JUMP"]),
    ("run opposite left after walk right", ["RTURN", "WALK", "LTURN", "LTURN", "RUN"]),
    ("jump around right and turn opposite left twice", JR * 4 + ["LTURN"] * 4),
]
SCAN_TREES = {
    "jump around left twice": ScanCommand(ScanPhrase(ScanVerb("jump", "left", "around"), 2)),
    "walk around right": ScanCommand(ScanPhrase(ScanVerb("walk", "right", "around"))),
    "turn around right": ScanCommand(ScanPhrase(ScanVerb("turn", "right", "around"))),
    "turn around left thrice": ScanCommand(ScanPhrase(ScanVerb("turn", "left", "around"), 3)),
    "turn opposite left": ScanCommand(ScanPhrase(ScanVerb("turn", "left", "opposite"))),
    "look opposite right twice": ScanCommand(ScanPhrase(ScanVerb("look", "right", "opposite"), 2)),
    "walk after run": ScanCommand(ScanPhrase(ScanVerb("walk")), "after", ScanPhrase(ScanVerb("run"))),
    "jump thrice after turn left twice": ScanCommand(
        ScanPhrase(ScanVerb("jump"), 3), "after", ScanPhrase(ScanVerb("turn", "left"), 2)
    ),
    "run opposite left after walk right": ScanCommand(
        ScanPhrase(ScanVerb("run", "left", "opposite")), "after", ScanPhrase(ScanVerb("walk", "right"))
    ),
    "jump around right and turn opposite left twice": ScanCommand(
        ScanPhrase(ScanVerb("jump", "right", "around")), "and", ScanPhrase(ScanVerb("turn", "left", "opposite"), 2)
    ),
}


@pytest.mark.parametrize("command,expected", SCAN_CASES)
def test_scan_semantics(command, expected):
    assert scan_actions(command) == expected
    if command in SCAN_TREES:
        tree = SCAN_TREES[command]
        assert tree.command() == command and tree.actions() == expected
    item = Item("scan", "x", f"Translate to actions: {command}", " ".join(expected), 1)
    assert SUITES["scan"].check(item)


def test_scan_generator_and_interpreter_agree_on_every_command():
    phrases = [ScanPhrase(verb, times) for verb in SCAN_VERBS for times in (1, 2, 3)]
    commands = [ScanCommand(p) for p in phrases]
    commands += [ScanCommand(a, conj, b) for a in phrases for conj in ("and", "after") for b in phrases]
    assert len(SCAN_VERBS) == 34 and len(commands) == 20910  # SCAN's 20,910 commands
    assert len({c.command() for c in commands}) == len(commands)
    lengths = set()
    for command in commands:
        actions = command.actions()
        assert scan_actions(command.command()) == actions
        lengths.add(len(actions))
    assert max(lengths) == 48 and 23 not in lengths and SCAN_MIN_TEST_ACTIONS in lengths


@pytest.mark.parametrize("bad", ["", "turn", "jump up", "walk around", "turn twice", "jump and", "fly left"])
def test_scan_rejects_what_the_grammar_cannot_say(bad):
    with pytest.raises(ValueError):
        scan_actions(bad)
    assert not SUITES["scan"].check(Item("scan", "x", f"Translate to actions: {bad}", "JUMP", 1))


def test_scan_trees_validate():
    with pytest.raises(ValueError):
        ScanVerb("turn")
    with pytest.raises(ValueError):
        ScanVerb("jump", "", "around")


# ---------------------------------------------------------------------------------------------
# Prompts, scoring, training text, errors

Q1 = Item("addition", "addition/train/1/0", "What is 2 + 3?", "5", 1)
Q2 = Item("addition", "addition/train/1/1", "What is 4 + 4?", "8", 1)
Q3 = Item("addition", "addition/test/1/0", "What is 7 + 9?", "16", 1)


def test_format_prompt():
    assert format_prompt(Q3) == "Q: What is 7 + 9?\nA:"
    assert format_prompt(Q3, [Q1, Q2]) == (
        "Q: What is 2 + 3?\nA: 5\n\nQ: What is 4 + 4?\nA: 8\n\nQ: What is 7 + 9?\nA:"
    )


def test_score():
    assert score(Q3, " 16")
    assert score(Q3, "16  \nQ: What is 1 + 1?\nA: 2")
    assert score(Q3, "16\n")
    assert not score(Q3, " 17\n16")
    assert not score(Q3, "16.")
    assert not score(Q3, "")
    assert not score(Q3, "\n16")


def test_training_text():
    docs = list(training_text("addition", 5, 2, seed=7))
    items = SUITES["addition"].items("train", 5, 2, seed=7)
    assert docs == [f"Q: {item.question}\nA: {item.answer}\n" for item in items]
    assert all(re.fullmatch(r"Q: What is \d\d \+ \d\d\?\nA: \d+\n", doc) for doc in docs)
    code = next(training_text("code_output", 1, 2))
    assert code.startswith("Q: What does this Python program print?\n```\n") and code.endswith("\n")


def test_bad_requests_are_config_errors():
    with pytest.raises(ConfigError, match="unknown suite"):
        get_suite("nope")
    with pytest.raises(ConfigError, match="unknown split"):
        SUITES["addition"].items("dev", 1)
    with pytest.raises(ConfigError, match=">= 1"):
        SUITES["addition"].items("test", 1, 0)
    with pytest.raises(ConfigError, match="<= 9"):
        SUITES["last_letter"].items("test", 1, 10)
    with pytest.raises(ConfigError, match="integer"):
        SUITES["addition"].items("test", 1, 2.5)
