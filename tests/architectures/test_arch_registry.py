import pytest

from sklearn_mtl.architectures import (
    ARCHITECTURES,
    CrossStitch,
    HardSharing,
    MMoE,
    PLE,
    SoftSharing,
    resolve_architecture,
)


@pytest.mark.parametrize("name, cls", [
    ("hard", HardSharing), ("soft", SoftSharing), ("cross_stitch", CrossStitch),
    ("mmoe", MMoE), ("ple", PLE),
])
def test_names_give_fresh_default_instances(name, cls):
    arch = resolve_architecture(name)
    assert type(arch) is cls
    assert arch.get_params() == cls().get_params()
    assert resolve_architecture(name) is not arch


def test_instance_is_returned_as_is():
    arch = MMoE(n_experts=2)
    assert resolve_architecture(arch) is arch


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError) as info:
        resolve_architecture("hardd")
    message = str(info.value)
    assert "'hardd'" in message
    for name in ARCHITECTURES:
        assert repr(name) in message


@pytest.mark.parametrize("bad", [None, 3, ("hard",), object()])
def test_other_types_raise_type_error(bad):
    with pytest.raises(TypeError, match="name or an Architecture instance"):
        resolve_architecture(bad)


def test_class_instead_of_instance_gets_a_hint():
    with pytest.raises(TypeError, match=r"did you mean MMoE\(\)"):
        resolve_architecture(MMoE)
