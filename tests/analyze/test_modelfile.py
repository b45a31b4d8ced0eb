"""The model-file contract: loading like `python model.py`, synthesized data, the training loop."""

from __future__ import annotations

import math
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gradscope.analyze import AnalyzeConfig, analyze_file
from gradscope.analyze.batches import BatchSource, default_loss, parse_input_shape
from gradscope.analyze.modelfile import MODULE_NAME, load_model_file
from gradscope.errors import ConfigError, ModelFileError


@pytest.fixture
def write(tmp_path):
    def write(source: str, name: str = "model.py"):
        path = tmp_path / name
        path.write_text(textwrap.dedent(source))
        return path

    return write


def _source(model_file, batch_size=4, input_shape=None, seed=0):
    model = model_file.instantiate()
    return model, BatchSource(model_file, model, batch_size, seed, torch.device("cpu"), input_shape)


# ---- loading ---------------------------------------------------------------------------------
def test_runs_like_python_model_py_but_not_as_main(write, tmp_path):
    write("WIDTH = 7\n", name="helpers.py")
    path = write(
        """
        import sys
        from torch import nn
        from helpers import WIDTH          # a sibling module: the file's folder is on sys.path

        SEEN = {"name": __name__, "argv0": sys.argv[0], "file": __file__}
        TRAINED = False

        def build_model():
            return nn.Linear(WIDTH, 2)

        if __name__ == "__main__":
            TRAINED = True                 # a training script: gradscope must not start it
        """
    )
    loaded = load_model_file(path)
    assert loaded.namespace.SEEN == {"name": MODULE_NAME, "argv0": str(path), "file": str(path)}
    assert loaded.namespace.TRAINED is False
    assert sys.modules[MODULE_NAME] is loaded.namespace
    assert loaded.instantiate().in_features == 7
    assert sys.argv[0] != str(path)  # restored afterwards


def test_module_level_model_and_optional_functions(write):
    path = write(
        """
        from torch import nn
        model = nn.Linear(3, 2)
        def loss_fn(outputs, targets):
            return outputs.sum()
        """
    )
    loaded = load_model_file(path)
    assert loaded.build_model is None and isinstance(loaded.model, nn.Linear)
    assert loaded.instantiate() is loaded.model
    assert loaded.loss_fn is not None and loaded.make_batch is None and loaded.val_data is None


def test_build_model_wins_over_model(write):
    path = write(
        """
        from torch import nn
        model = nn.Linear(3, 2)
        def build_model():
            return nn.Linear(5, 2)
        """
    )
    assert load_model_file(path).instantiate().in_features == 5


@pytest.mark.parametrize(
    "source, phrase",
    [
        ("from torch import nn\nmodel = nn.Linear(2, 2)\nmake_batch = 3\n", "`make_batch` as an int"),
        (
            "from torch import nn\nmodel = nn.Linear(2, 2)\ndef make_batch(n): pass\ndef train_data(): pass\n",
            "both `make_batch` and `train_data`",
        ),
        ("import sys\nsys.exit(3)\n", "called sys.exit(3)"),
        ("model = 42\n", "is an int, not a torch.nn.Module"),
    ],
)
def test_contract_violations(write, source, phrase):
    with pytest.raises(ModelFileError) as info:
        load_model_file(write(source))
    assert phrase in str(info.value)


def test_user_exception_is_kept_as_the_cause(write):
    path = write("def build_model():\n    return {}['missing']\n")
    with pytest.raises(ModelFileError) as info:
        load_model_file(path).instantiate()
    assert isinstance(info.value.__cause__, KeyError)
    assert "model.py:2 in build_model: `return {}['missing']`" in str(info.value)


# ---- synthesized inputs and targets -----------------------------------------------------------
@pytest.mark.parametrize(
    "layer, shape",
    [
        ("nn.Linear(12, 4)", (4, 12)),
        ("nn.Conv1d(3, 4, 3)", (4, 3, 32)),
        ("nn.Conv2d(3, 4, 3)", (4, 3, 32, 32)),
        ("nn.Conv3d(2, 4, 3)", (4, 2, 16, 16, 16)),
        ("nn.LayerNorm(6)", (4, 6)),
    ],
)
def test_inputs_are_synthesized_from_the_first_layer(write, layer, shape):
    _, source = _source(load_model_file(write(f"from torch import nn\nmodel = nn.Sequential({layer}, nn.ReLU())\n")))
    inputs = source.next(0).inputs
    assert tuple(inputs.shape) == shape and inputs.dtype == torch.float32
    assert source.next(1).targets is None  # drawn from the output's shape after the forward


def test_embedding_gets_integer_tokens_below_num_embeddings(write):
    _, source = _source(load_model_file(write("from torch import nn\nmodel = nn.Embedding(5, 3)\n")), batch_size=64)
    tokens = source.next(0).inputs
    assert tokens.shape == (64, 16) and tokens.dtype == torch.int64
    assert int(tokens.min()) >= 0 and int(tokens.max()) == 4  # all 5 tokens appear in 1024 draws


def test_input_shape_overrides_and_double_models_get_double_inputs(write):
    path = write("from torch import nn\nmodel = nn.Sequential(nn.Conv2d(3, 4, 3)).double()\n")
    _, source = _source(load_model_file(path), input_shape=(3, 9, 7))
    inputs = source.next(0).inputs
    assert inputs.shape == (4, 3, 9, 7) and inputs.dtype == torch.float64


def test_no_layer_to_infer_from_is_a_clear_error(write):
    path = write(
        """
        import torch
        from torch import nn
        class Scale(nn.Module):
            def __init__(self):
                super().__init__()
                self.w = nn.Parameter(torch.ones(3))
            def forward(self, x):
                return x * self.w
        model = Scale()
        """
    )
    with pytest.raises(ModelFileError, match="Cannot infer the input shape.*`input_shape`"):
        _source(load_model_file(path))
    _, source = _source(load_model_file(path), input_shape=(3,))  # and input_shape fixes it
    assert source.next(0).inputs.shape == (4, 3)


def test_lazy_first_layer_needs_input_shape(write):
    path = write("from torch import nn\nmodel = nn.Sequential(nn.LazyLinear(4))\n")
    with pytest.raises(ModelFileError, match=r"first layer '0' \(LazyLinear\)"):
        _source(load_model_file(path))


def test_targets_follow_the_output_shape(write):
    _, source = _source(load_model_file(write("from torch import nn\nmodel = nn.Linear(2, 2)\n")))
    classes = source.make_targets(torch.zeros(64, 5))
    assert classes.dtype == torch.int64 and classes.shape == (64,) and 0 <= int(classes.min()) <= int(classes.max()) < 5
    tokens = source.make_targets(torch.zeros(8, 6, 11))
    assert tokens.shape == (8, 6) and int(tokens.max()) < 11
    regression = source.make_targets(torch.zeros(16, 1))
    assert regression.is_floating_point() and regression.shape == (16, 1)
    with pytest.raises(ModelFileError, match="cannot make up targets"):
        source.make_targets({"logits": torch.zeros(2, 2)})


@pytest.mark.parametrize(
    "text, shape",
    [("3x32x32", (3, 32, 32)), ("3,32,32", (3, 32, 32)), ("(3, 32, 32)", (3, 32, 32)), ("784", (784,)), (None, None)],
)
def test_parse_input_shape(text, shape):
    assert parse_input_shape(text) == shape


@pytest.mark.parametrize("text", ["0x3", "3xbig", "-1", "x"])
def test_parse_input_shape_rejects(text):
    with pytest.raises(ConfigError, match="`input_shape`") as caught:
        parse_input_shape(text)
    assert "--" not in str(caught.value)  # the library names its field; the CLI maps it to --input-shape


# ---- the default loss --------------------------------------------------------------------------
def test_default_loss_against_torch_references():
    torch.manual_seed(1)
    logits, labels = torch.randn(6, 4), torch.randint(0, 4, (6,))
    assert torch.equal(default_loss(logits, labels), F.cross_entropy(logits, labels))
    sequence, tokens = torch.randn(2, 5, 7), torch.randint(0, 7, (2, 5))
    reference = F.cross_entropy(sequence.permute(0, 2, 1), tokens)  # torch's own (B, C, T) layout
    assert torch.allclose(default_loss(sequence, tokens), reference)
    images, masks = torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4))
    assert torch.equal(default_loss(images, masks), F.cross_entropy(images, masks))
    values, targets = torch.randn(5, 2), torch.randn(5, 2)
    assert torch.equal(default_loss(values, targets), F.mse_loss(values, targets))
    with pytest.raises(ModelFileError, match=r"same shape.*\(5, 2\) and \(5,\)"):
        default_loss(values, torch.randn(5))


# ---- the training loop ---------------------------------------------------------------------------
DROPOUT_MLP = """
    import torch
    from torch import nn

    MODES = []  # (training?, grad enabled?) per forward call, written by the model itself

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 3))

        def forward(self, x):
            MODES.append((self.training, torch.is_grad_enabled()))
            return self.body(x)

    def build_model():
        return Net()

    def make_batch(batch_size):
        return torch.randn(batch_size, 8), torch.randint(0, 3, (batch_size,))

    def val_data():
        g = torch.Generator().manual_seed(5)
        return [(torch.randn(10, 8, generator=g), torch.randint(0, 3, (10,), generator=g)) for _ in range(2)]
"""


def test_validation_runs_in_eval_mode_without_grad_and_training_resumes(write):
    path = write(DROPOUT_MLP)
    record = analyze_file(path, AnalyzeConfig(steps=3, batch_size=4))
    modes = sys.modules[MODULE_NAME].MODES
    assert modes == [(True, True), (False, False), (False, False)] * 3  # 1 training + 2 val batches per step
    steps, val = record.scalar_series("val_loss")
    assert steps == [0, 1, 2] and all(math.isfinite(v) for v in val)
    assert record.series("act_calls", "body.0") == [1.0, 1.0, 1.0]  # validation forwards are not recorded


def test_every_controls_recording_and_val_every_validation(write):
    record = analyze_file(write(DROPOUT_MLP), AnalyzeConfig(steps=5, batch_size=4, every=2, val_every=2))
    assert record.steps == [0, 2, 4]
    assert record.scalar_series("val_loss")[0] == [1, 3, 4]  # every 2nd step, and the last
    assert len(record.scalar_series("loss")[0]) == 5


def test_seeded_runs_are_identical_and_seeds_matter(write):
    path = write(DROPOUT_MLP)
    first = analyze_file(path, AnalyzeConfig(steps=4, batch_size=4, seed=3))
    again = analyze_file(path, AnalyzeConfig(steps=4, batch_size=4, seed=3))
    other = analyze_file(path, AnalyzeConfig(steps=4, batch_size=4, seed=4))
    assert first.scalars == again.scalars
    assert first.layer_stats == again.layer_stats
    assert first.scalars["loss"] != other.scalars["loss"]


def test_module_level_model_is_seeded_too(write):
    path = write("from torch import nn\nmodel = nn.Linear(4, 3)\n")
    a = analyze_file(path, AnalyzeConfig(steps=2, batch_size=4, seed=9))
    b = analyze_file(path, AnalyzeConfig(steps=2, batch_size=4, seed=9))
    assert a.scalars == b.scalars


def test_train_data_is_reiterated_each_epoch(write):
    path = write(
        """
        import torch
        from torch import nn
        from torch.utils.data import DataLoader, TensorDataset

        EPOCHS = []
        model = nn.Linear(4, 2)

        def train_data():
            EPOCHS.append(len(EPOCHS))
            return DataLoader(TensorDataset(torch.randn(6, 4), torch.randint(0, 2, (6,))), batch_size=3)
        """
    )
    record = analyze_file(path, AnalyzeConfig(steps=5))
    assert sys.modules[MODULE_NAME].EPOCHS == [0, 1, 2]  # 2 batches per epoch, 5 steps
    assert record.steps == list(range(5))
    assert record.meta.options["data"] == "train_data"


@pytest.mark.parametrize(
    "body, phrase",
    [
        ("def train_data():\n    return []\n", "yielded no batches"),
        ("def make_batch(n):\n    return torch.randn(n, 4)\n", "must be a pair (inputs, targets)"),
        ("def make_optimizer(params):\n    return 'adam'\n", "not a torch.optim.Optimizer"),
        ("def loss_fn(o, t):\n    return o.detach().mean()\n", "does not require grad"),
    ],
)
def test_data_and_training_contract_errors(write, body, phrase):
    path = write("import torch\nfrom torch import nn\nmodel = nn.Linear(4, 2)\n" + body)
    with pytest.raises(ModelFileError) as info:
        analyze_file(path, AnalyzeConfig(steps=2, batch_size=3))
    assert phrase in str(info.value)


@pytest.mark.parametrize("kind", ["dict", "tuple"])
def test_dict_and_tuple_inputs_are_spread_into_forward(write, kind):
    path = write(
        """
        import torch
        from torch import nn

        class TwoInputs(nn.Module):
            def __init__(self):
                super().__init__()
                self.a, self.b = nn.Linear(3, 2), nn.Linear(5, 2)
            def forward(self, left, right):
                return self.a(left) + self.b(right)

        model = TwoInputs()
        KIND = "%s"

        def make_batch(n):
            left, right = torch.randn(n, 3), torch.randn(n, 5)
            inputs = {"left": left, "right": right} if KIND == "dict" else (left, right)
            return inputs, torch.randint(0, 2, (n,))
        """
        % kind
    )
    record = analyze_file(path, AnalyzeConfig(steps=2, batch_size=4))
    assert set(record.layers) == {"a", "b"}


def test_make_optimizer_and_overrides(write):
    path = write(
        """
        import torch
        from torch import nn
        model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
        def make_optimizer(parameters):
            return torch.optim.RMSprop(parameters, lr=0.5)
        """
    )
    own = analyze_file(path, AnalyzeConfig(steps=1, batch_size=4))
    assert own.meta.optimizer == "RMSprop" and own.meta.options["optimizer_used"] == "RMSprop from make_optimizer"
    lr = analyze_file(path, AnalyzeConfig(steps=1, batch_size=4, lr=1e-4))
    assert any("lr=0.0001 replaced" in note for note in lr.meta.notes)
    assert lr.last("update_ratio", "0") < own.last("update_ratio", "0")  # the smaller rate really was used
    adam = analyze_file(path, AnalyzeConfig(steps=1, batch_size=4, optimizer="adam"))
    assert adam.meta.optimizer == "Adam" and any("instead of make_optimizer" in n for n in adam.meta.notes)


def test_language_model_trains_on_synthesized_tokens(write):
    path = write(
        """
        from torch import nn
        model = nn.Sequential(nn.Embedding(50, 8), nn.Linear(8, 50))
        """
    )
    record = analyze_file(path, AnalyzeConfig(steps=3, batch_size=4))
    _, losses = record.scalar_series("loss")
    assert all(abs(v - math.log(50)) < 1.0 for v in losses)  # cross-entropy of 50 random classes
    assert any("integer tokens of shape (4, 16)" in note for note in record.meta.notes)


def test_config_validation():
    for bad, field in ((dict(steps=0), "steps"), (dict(every=-1), "every"), (dict(lr=-1.0), "lr"),
                       (dict(optimizer="lbfgs"), "optimizer"), (dict(device="tpu"), "device")):
        with pytest.raises(ConfigError, match=f"`{field}`") as caught:
            AnalyzeConfig(**bad).validate()
        assert "--" not in str(caught.value)
