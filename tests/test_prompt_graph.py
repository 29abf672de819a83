"""graph.py + load_prompt: every validation error class, the loaders, aliases and chains."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from graphs import blend

from comfywhip_nb.prompts import NodeError, PromptError, load_prompt
from comfywhip_nb.prompts.graph import MAX_NODES, parse_prompt


def chain(*middle: tuple[str, dict[str, Any]], image_key: str = "image") -> dict[str, Any]:
    """LoadTensor "1" -> middle nodes "2".. (each fed the previous output) -> SaveTensor."""
    graph: dict[str, Any] = {"1": {"class_type": "LoadTensor", "inputs": {}}}
    previous = "1"
    for n, (class_type, inputs) in enumerate(middle, start=2):
        graph[str(n)] = {"class_type": class_type, "inputs": {image_key: [previous, 0], **inputs}}
        previous = str(n)
    graph[str(len(graph) + 1)] = {"class_type": "SaveTensor", "inputs": {"images": [previous, 0]}}
    return graph


def errors_of(p: Any, **kwargs: Any) -> list[NodeError]:
    with pytest.raises(PromptError) as info:
        load_prompt(p, **kwargs)
    return info.value.errors


def where(errors: list[NodeError]) -> list[tuple[str | None, str | None]]:
    return [(e.node_id, e.class_type) for e in errors]


# --- valid prompts -------------------------------------------------------------------------------


def test_valid_prompt_is_normalised() -> None:
    prompt = load_prompt(chain(("ImageBlur", {"blur_radius": 2, "sigma": 1.5})))
    assert prompt.graphs == [
        {
            "1": {"class_type": "LoadTensor", "inputs": {}},
            "2": {
                "class_type": "ImageBlur",
                "inputs": {"image": ["1", 0], "blur_radius": 2, "sigma": 1.5},
            },
            "3": {"class_type": "SaveTensor", "inputs": {"images": ["2", 0]}},
        }
    ]


def test_generator_without_load_tensor_is_valid() -> None:
    graph = {
        "5": {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 4, "batch_size": 1, "color": 0},
        },
        "6": {"class_type": "SaveTensor", "inputs": {"images": ["5", 0]}},
    }
    assert load_prompt(graph).graphs[0]["5"]["class_type"] == "EmptyImage"


def test_unknown_extra_inputs_are_ignored_and_dropped() -> None:
    graph = chain(("ImageInvert", {"strength": 3, "nested": [[[1]]], "note": {"a": 1}}))
    assert load_prompt(graph).graphs[0]["2"]["inputs"] == {"image": ["1", 0]}


def test_int_given_as_whole_float_and_float_given_as_int_are_normalised() -> None:
    graph = chain(("ImageBlur", {"blur_radius": 3.0, "sigma": 2}))
    inputs = load_prompt(graph).graphs[0]["2"]["inputs"]
    assert inputs["blur_radius"] == 3 and isinstance(inputs["blur_radius"], int)
    assert inputs["sigma"] == 2.0 and isinstance(inputs["sigma"], float)


def test_integer_node_ids_and_link_sources_become_strings() -> None:
    graph = {
        1: {"class_type": "LoadTensor", "inputs": {}},
        2: {"class_type": "SaveTensor", "inputs": {"images": [1, 0]}},
    }
    assert load_prompt(graph).graphs == [
        {
            "1": {"class_type": "LoadTensor", "inputs": {}},
            "2": {"class_type": "SaveTensor", "inputs": {"images": ["1", 0]}},
        }
    ]


def test_python_tuples_are_links_too() -> None:
    graph = chain(("ImageInvert", {}))
    graph["2"]["inputs"]["image"] = ("1", 0)
    assert load_prompt(graph).graphs[0]["2"]["inputs"]["image"] == ["1", 0]


def test_comfyui_prompt_body_is_unwrapped() -> None:
    body = {"prompt": chain(("ImageInvert", {})), "client_id": "abc"}
    assert load_prompt(body).graphs[0]["2"]["class_type"] == "ImageInvert"


# --- one test per error class -------------------------------------------------------------------


def test_unknown_class_type_suggests_a_close_match() -> None:
    errors = errors_of(chain(("ImageBlurr", {"blur_radius": 1, "sigma": 1.0})))
    assert where(errors) == [("2", "ImageBlurr")]
    assert "unknown class_type 'ImageBlurr' (did you mean 'ImageBlur'?)" in errors[0].message


def test_missing_required_input() -> None:
    errors = errors_of(chain(("ImageBlur", {"blur_radius": 1})))
    assert where(errors) == [("2", "ImageBlur")]
    assert errors[0].input_name == "sigma"
    assert errors[0].message == "missing required input 'sigma'"


def test_link_to_an_output_of_another_type() -> None:
    graph = chain(("ImageToMask", {"channel": "red"}), ("ImageInvert", {}))
    errors = errors_of(graph)
    assert where(errors) == [("3", "ImageInvert")]
    assert "expects IMAGE but output 0 of node 2 (ImageToMask) is MASK" in errors[0].message


@pytest.mark.parametrize(
    ("inputs", "name", "text"),
    [
        ({"blur_radius": "3", "sigma": 1.0}, "blur_radius", "expects INT, got str '3'"),
        ({"blur_radius": True, "sigma": 1.0}, "blur_radius", "expects INT, got bool True"),
        ({"blur_radius": 2.5, "sigma": 1.0}, "blur_radius", "expects INT, got float 2.5"),
        ({"blur_radius": 2, "sigma": [1.0]}, "sigma", "malformed link"),
        ({"blur_radius": 2, "sigma": float("nan")}, "sigma", "expects FLOAT, got float nan"),
        ({"blur_radius": 2, "sigma": None}, "sigma", "expects FLOAT, got NoneType None"),
    ],
)
def test_literal_of_the_wrong_python_type(inputs: dict[str, Any], name: str, text: str) -> None:
    errors = errors_of(chain(("ImageBlur", inputs)))
    assert where(errors) == [("2", "ImageBlur")]
    assert errors[0].input_name == name
    assert text in errors[0].message


def test_out_of_range_values_report_the_bound() -> None:
    errors = errors_of(chain(("ImageBlur", {"blur_radius": 99, "sigma": 0.01})))
    assert [str(e) for e in errors] == [
        "node 2 (ImageBlur): input 'blur_radius' = 99 is above max 31",
        "node 2 (ImageBlur): input 'sigma' = 0.01 is below min 0.1",
    ]


def test_combo_value_not_in_choices() -> None:
    errors = errors_of(chain(("ImageFlip", {"flip_method": "horizontal"})))
    assert where(errors) == [("2", "ImageFlip")]
    assert (
        "'horizontal' is not one of ['x-axis: vertically', 'y-axis: horizontally']"
        in errors[0].message
    )


def test_link_to_a_missing_node() -> None:
    graph = chain(("ImageInvert", {}))
    graph["2"]["inputs"]["image"] = ["42", 0]
    errors = errors_of(graph)
    assert where(errors) == [("2", "ImageInvert")]
    assert errors[0].message == "input 'image' links to node 42, which does not exist"


def test_link_to_a_bad_output_index() -> None:
    graph = chain(("ImageInvert", {}))
    graph["2"]["inputs"]["image"] = ["1", 3]
    errors = errors_of(graph)
    assert where(errors) == [("2", "ImageInvert")]
    assert "links to output 3 of node 1 (LoadTensor), which has 1 output(s)" in errors[0].message


@pytest.mark.parametrize(
    "link", [["1"], ["1", "0"], ["1", 0, 0], [True, 0], ["1", False], [["1"], 0], []]
)
def test_malformed_links(link: list[Any]) -> None:
    graph = chain(("ImageInvert", {}))
    graph["2"]["inputs"]["image"] = link
    errors = errors_of(graph)
    assert where(errors) == [("2", "ImageInvert")]
    assert "malformed link" in errors[0].message


def test_literal_where_a_link_is_needed() -> None:
    graph = chain(("ImageInvert", {}))
    graph["2"]["inputs"]["image"] = "frame.png"
    errors = errors_of(graph)
    assert where(errors) == [("2", "ImageInvert")]
    assert "expects a link to a IMAGE output" in errors[0].message


def test_cycles_name_every_node_in_them() -> None:
    graph = chain(("ImageInvert", {}), ("ImageInvert", {}))
    graph["2"]["inputs"]["image"] = ["3", 0]  # 2 <-> 3
    errors = errors_of(graph)
    assert where(errors) == [("2", "ImageInvert"), ("3", "ImageInvert")]
    assert all("cycle" in e.message for e in errors)


def test_self_loop_is_a_cycle() -> None:
    graph = chain(("ImageInvert", {}))
    graph["2"]["inputs"]["image"] = ["2", 0]
    assert where(errors_of(graph)) == [("2", "ImageInvert")]


def test_no_output_node() -> None:
    graph = {
        "1": {"class_type": "LoadTensor", "inputs": {}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    }
    errors = errors_of(graph)
    assert where(errors) == [(None, None)]
    assert "no output node" in str(errors[0]) and "SaveTensor" in str(errors[0])


def test_ui_format_workflow_gets_export_advice() -> None:
    workflow = {
        "last_node_id": 3,
        "nodes": [{"id": 1, "type": "LoadImage"}],
        "links": [],
        "version": 0.4,
    }
    errors = errors_of(workflow)
    assert str(errors[0]) == "this is a UI-format workflow; export it with 'Save (API Format)'"


@pytest.mark.parametrize(
    ("entry", "text"),
    [
        ("LoadTensor", "a node must be an object"),
        ([1, 2], "a node must be an object"),
        ({"inputs": {}}, "no 'class_type'"),
        ({"class_type": 7, "inputs": {}}, "no 'class_type'"),
        ({"class_type": "ImageInvert", "inputs": [1]}, "'inputs' must be an object"),
    ],
)
def test_malformed_node_entries(entry: Any, text: str) -> None:
    graph = chain(("ImageInvert", {}))
    graph["2"] = entry
    errors = errors_of(graph)
    assert errors[0].node_id == "2"
    assert text in errors[0].message


@pytest.mark.parametrize("empty", [{}, [], "{}", "[]", [{}]])
def test_empty_prompt(empty: Any) -> None:
    assert "empty" in str(errors_of(empty)[0])


def test_bad_json_string_reports_line_and_column() -> None:
    errors = errors_of('{\n  "1": {"class_type": "LoadTensor",, "inputs": {}}\n}')
    assert str(errors[0]).startswith("invalid JSON at line 2, column 36")


@pytest.mark.parametrize("p", [42, None, 3.5, object(), b"\xff\xfe"])
def test_wrong_top_level_types(p: Any) -> None:
    assert errors_of(p)


def test_all_errors_are_collected_across_nodes() -> None:
    graph = chain(
        ("ImageBlurr", {}),
        ("ImageSharpen", {"sharpen_radius": 0, "sigma": 1.0, "alpha": 9.0}),
        ("ImageFlip", {"flip_method": "z"}),
    )
    graph["9"] = {"class_type": "ImageInvert", "inputs": {}}
    errors = errors_of(graph)
    assert where(errors) == [
        ("2", "ImageBlurr"),
        ("3", "ImageSharpen"),
        ("3", "ImageSharpen"),
        ("4", "ImageFlip"),
        ("9", "ImageInvert"),
    ]
    text = str(PromptError(errors))
    assert text.startswith("5 errors in prompt:\n")
    assert "node 3 (ImageSharpen): input 'alpha' = 9.0 is above max 5.0" in text


def test_validate_inputs_hooks_run_at_validation() -> None:
    too_big = {"width": 16384, "height": 16384, "batch_size": 4096, "color": 0}
    graph = {
        "1": {"class_type": "EmptyImage", "inputs": too_big},
        "2": {
            "class_type": "Canny",
            "inputs": {"image": ["1", 0], "low_threshold": 0.9, "high_threshold": 0.1},
        },
        "3": {"class_type": "SaveTensor", "inputs": {"images": ["2", 0]}},
    }
    errors = errors_of(graph)
    assert where(errors) == [("1", "EmptyImage"), ("2", "Canny")]
    assert "over the limit" in errors[0].message
    assert "low_threshold 0.9 is above high_threshold 0.1" in errors[1].message


def test_prompt_error_to_dict_is_json() -> None:
    errors = errors_of(chain(("ImageBlur", {"blur_radius": 99, "sigma": 1.0})))
    payload = json.loads(json.dumps(PromptError(errors).to_dict()))
    assert payload["error"] == "node 2 (ImageBlur): input 'blur_radius' = 99 is above max 31"
    assert payload["node_errors"] == [
        {
            "node_id": "2",
            "class_type": "ImageBlur",
            "message": "input 'blur_radius' = 99 is above max 31",
            "input_name": "blur_radius",
            "graph": None,
        }
    ]


# --- aliases and chains -------------------------------------------------------------------------


def test_comfyui_loaders_and_savers_map_to_the_stream_ends() -> None:
    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "../../etc/passwd"}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
        "5": {
            "class_type": "SaveImage",
            "inputs": {"images": ["2", 0], "filename_prefix": "/tmp/evil"},
        },
    }
    g = load_prompt(graph).graphs[0]
    assert [g[i]["class_type"] for i in "1245"] == [
        "LoadTensor",
        "ImageInvert",
        "SaveTensor",
        "SaveTensor",
    ]
    assert g["1"]["inputs"] == {} and g["5"]["inputs"] == {"images": ["2", 0]}
    primary = {"1": {"class_type": "PrimaryInputLoadImage", "inputs": {"image": "x.png"}}}
    assert load_prompt({**graph, **primary}).graphs[0]["1"]["class_type"] == "LoadTensor"


# --- ComfyStream's LoadImage rule: reference images stay files ---------------------------------


def write_png(path: Path, rgb: tuple[int, int, int] = (255, 0, 0)) -> None:
    from PIL import Image

    Image.new("RGB", (6, 4), rgb).save(path)


def blend_graph(first: str, second: str) -> dict[str, Any]:
    return blend(
        {"class_type": first, "inputs": {"image": "live.png"}},
        {"class_type": second, "inputs": {"image": "ref.png"}},
    )


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("PrimaryInputLoadImage", "LoadImage"),
        ("LoadTensor", "LoadImage"),
        ("LoadImage", "LoadImage"),
    ],
)
def test_a_reference_load_image_reads_its_file_never_the_camera(
    tmp_path: Path, first: str, second: str
) -> None:
    import torch

    write_png(tmp_path / "ref.png", (0, 255, 0))
    write_png(tmp_path / "live.png", (0, 0, 255))
    prompt = load_prompt(blend_graph(first, second), allowed_dir=tmp_path, device="cpu")
    kinds = [prompt.graphs[0][i]["class_type"] for i in "12"]
    assert kinds[1] == "LoadImage"
    assert kinds[0] == ("LoadImage" if first == "LoadImage" else "LoadTensor")
    camera = torch.zeros(1, 4, 6, 3)
    out = prompt.run(camera)  # blend factor 1 "normal": the output is image2, the file
    assert out.shape == (1, 4, 6, 3)
    assert torch.equal(out[0, 0, 0], torch.tensor([0.0, 1.0, 0.0]))
    again = load_prompt(prompt.to_json(), allowed_dir=tmp_path, device="cpu")
    assert again.graphs == prompt.graphs  # the normalised graph reads back the same


def test_reference_images_need_an_allowed_folder_and_stay_inside_it(tmp_path: Path) -> None:
    graph = blend_graph("PrimaryInputLoadImage", "LoadImage")
    with pytest.raises(PromptError, match="no folder is allowed for files") as info:
        load_prompt(graph)
    assert where(info.value.errors) == [("2", "LoadImage")]
    assert info.value.errors[0].input_name == "image"
    (tmp_path / "inside").mkdir()
    write_png(tmp_path / "outside.png")
    for name, text in [
        ("../outside.png", "outside the allowed folder"),
        (str(tmp_path / "outside.png"), "outside the allowed folder"),
        ("missing.png", "does not exist"),
        ("notes.txt", "is not an image file"),
    ]:
        graph["2"]["inputs"]["image"] = name
        with pytest.raises(PromptError, match=text) as info:
            load_prompt(graph, allowed_dir=tmp_path / "inside")
        assert where(info.value.errors) == [("2", "LoadImage")]


def test_a_reference_load_image_gives_comfyuis_mask(tmp_path: Path) -> None:
    import torch
    from PIL import Image

    pixels = Image.new("RGBA", (3, 2), (10, 20, 30, 255))
    pixels.putpixel((0, 0), (10, 20, 30, 0))
    pixels.save(tmp_path / "ref.png")
    graph = blend_graph("PrimaryInputLoadImage", "LoadImage")
    graph["3"] = {"class_type": "MaskToImage", "inputs": {"mask": ["2", 1]}}
    graph["4"]["inputs"]["images"] = ["3", 0]
    out = load_prompt(graph, allowed_dir=tmp_path, device="cpu").run(torch.zeros(1, 2, 3, 3))
    assert out[0, ..., 0].tolist() == [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]  # 1 - alpha


def test_live_load_image_mask_output_is_not_available() -> None:
    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "a.png"}},
        "2": {"class_type": "MaskToImage", "inputs": {"mask": ["1", 1]}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
    }
    errors = errors_of(graph)
    assert where(errors) == [("2", "MaskToImage")]
    assert "output 1 of node 1 (LoadImage), which has 1 output(s)" in errors[0].message


def test_a_list_is_a_chain_and_errors_name_the_graph() -> None:
    good = chain(("ImageInvert", {}))
    bad = chain(("ImageBlur", {"blur_radius": 0, "sigma": 1.0}))
    assert len(load_prompt([good, good]).graphs) == 2
    errors = errors_of([good, bad])
    assert [(e.graph, e.node_id) for e in errors] == [(1, "2")]
    assert str(errors[0]) == "prompt[1], node 2 (ImageBlur): input 'blur_radius' = 0 is below min 1"


# --- files and hostile input --------------------------------------------------------------------


def test_file_path_inside_allowed_dir(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps(chain(("ImageInvert", {}))))
    for p in (path, str(path)):
        assert load_prompt(p, allowed_dir=tmp_path).graphs[0]["2"]["class_type"] == "ImageInvert"


def test_missing_file(tmp_path: Path) -> None:
    assert "does not exist" in str(errors_of(tmp_path / "nope.json")[0])
    assert "does not exist" in str(errors_of("nope.json")[0])
    assert "is not a file" in str(errors_of(tmp_path)[0])
    assert errors_of("~no_such_user_here/p.json") and errors_of("a\x00b.json")


def test_path_outside_allowed_dir_is_refused(tmp_path: Path) -> None:
    allowed = tmp_path / "prompts"
    allowed.mkdir()
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps(chain()))
    (allowed / "link.json").symlink_to(secret)
    for p in (allowed / ".." / "secret.json", secret, allowed / "link.json"):
        errors = errors_of(p, allowed_dir=allowed)
        assert "outside the allowed folder" in str(errors[0])


def test_file_that_is_not_json(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_bytes(b"\xff\x00garbage")
    assert errors_of(path)


def test_deeply_nested_json_is_a_prompt_error() -> None:
    assert errors_of("[" * 100_000 + "]" * 100_000)
    deep: Any = ["1", 0]
    for _ in range(100_000):
        deep = [deep]
    graph = chain(("ImageInvert", {}))
    graph["2"]["inputs"]["image"] = deep
    assert where(errors_of(graph)) == [("2", "ImageInvert")]


def test_huge_json_and_too_many_nodes_are_refused() -> None:
    assert "larger than" in str(errors_of("[" + " " * (1 << 20) + "]")[0])
    many = {str(i): {"class_type": "LoadTensor", "inputs": {}} for i in range(MAX_NODES + 1)}
    assert "at most 1000" in str(errors_of(many)[0])
    assert "at most 1000" in str(errors_of("[" + ",".join(["{}"] * 5000) + "]")[0])


def test_validation_uses_the_given_classes_only() -> None:
    with pytest.raises(PromptError):
        parse_prompt(chain(("ImageInvert", {})), classes={})


def test_the_load_image_rule_survives_hostile_class_types() -> None:
    graph = {
        "1": {"class_type": ["LoadImage"], "inputs": {}},
        "2": {"class_type": {"a": 1}, "inputs": {}},
        "3": {"class_type": "LoadImage", "inputs": {}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
    }
    assert {e.node_id for e in errors_of(graph)} == {"1", "2"}
