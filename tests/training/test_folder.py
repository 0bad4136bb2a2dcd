"""folder:PATH: captions beside images, class subfolders, corrupt files, resize/crop, batching."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from diffusion_studio.cli import main
from diffusion_studio.errors import UsageError
from diffusion_studio.training.datasets import make_stream
from diffusion_studio.training.datasets.folder import (
    FolderStream,
    caption_from_folder_name,
    load_image,
    scan_folder,
)
from diffusion_studio.training.events import read_events

from .conftest import tiny_config

RED, GREEN, BLUE = (220, 40, 40), (40, 170, 60), (40, 90, 220)


def solid(path, rgb, size=(24, 24), fmt=None, mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    value = rgb if mode == "RGB" else (*rgb, 255)
    Image.new(mode, size, value).save(path, format=fmt)
    return path


@pytest.fixture
def mixed(tmp_path):
    """Two captioned images at the top, two class folders (one image has its own .txt), junk."""
    root = tmp_path / "data"
    solid(root / "apple.png", RED)
    (root / "apple.txt").write_text("a red\napple  \n", encoding="utf-8")
    solid(root / "LEAF.JPG", GREEN, fmt="JPEG")
    (root / "LEAF.txt").write_text("a green leaf", encoding="utf-8")
    solid(root / "blue_sky" / "one.webp", BLUE, fmt="WEBP")
    solid(root / "blue_sky" / "deeper" / "two.jpeg", BLUE, fmt="JPEG")
    solid(root / "dark-red-things" / "x.PNG", (120, 10, 10))
    solid(root / "dark-red-things" / "y.png", (120, 10, 10))
    (root / "dark-red-things" / "y.txt").write_text("a special one", encoding="utf-8")
    (root / "dark-red-things" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (root / "truncated.png").write_bytes(solid(tmp_path / "t.png", RED).read_bytes()[:40])
    (root / "truncated.txt").write_text("never used", encoding="utf-8")
    solid(root / "uncaptioned.png", RED)
    solid(root / ".hidden" / "secret.png", RED)
    (root / "notes.md").write_text("not an image", encoding="utf-8")
    return root


def test_captions_classes_and_corrupt_files_are_counted(mixed):
    stream = FolderStream(mixed, image_size=8, batch_size=2)
    by_caption = {}
    for i, caption in enumerate(stream.captions):
        by_caption.setdefault(caption, []).append(stream.images[i])
    assert sorted(stream.captions) == ["a green leaf", "a red apple", "a special one", "blue sky", "blue sky",
                                       "dark red things"]
    # pixels follow captions (JPEG/WebP are lossy: a few levels of error)
    np.testing.assert_allclose(by_caption["a red apple"][0], np.broadcast_to(RED, (8, 8, 3)), atol=0)
    np.testing.assert_allclose(by_caption["a green leaf"][0], np.broadcast_to(GREEN, (8, 8, 3)), atol=4)
    for img in by_caption["blue sky"]:
        np.testing.assert_allclose(img, np.broadcast_to(BLUE, (8, 8, 3)), atol=4)
    info = stream.describe()
    assert info["images"] == 6 and info["found"] == 9 and info["skipped"] == 3 and info["in_memory"]
    assert info["skipped_by_reason"] == {"unreadable image": 2, "no caption": 1}
    assert info["classes"] == 2
    assert any(s.startswith("dark-red-things/broken.png") for s in info["skipped_examples"])


def test_class_folder_names_become_captions():
    assert caption_from_folder_name("red_apple") == "red apple"
    assert caption_from_folder_name("dark-red__things-") == "dark red things"
    assert caption_from_folder_name("Golden Retriever") == "Golden Retriever"


def test_resize_shorter_side_then_center_crop(tmp_path):
    # 30 x 20 (w x h): left third red, middle green, right third blue -> shorter side 20 -> 10:
    # 15 x 10 (red 0-4, green 5-9, blue 10-14); the crop keeps columns 2..11, so output
    # columns 0-2 are red, 3-7 green, 8-9 blue (Lanczos rings a few levels near the edges).
    pixels = np.zeros((20, 30, 3), np.uint8)
    pixels[:, :10], pixels[:, 10:20], pixels[:, 20:] = RED, GREEN, BLUE
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    out = load_image(tmp_path / "wide.png", 10)
    assert out.shape == (10, 10, 3) and out.dtype == np.uint8
    np.testing.assert_allclose(out[:, 4:7], np.broadcast_to(GREEN, (10, 3, 3)), atol=4)
    np.testing.assert_allclose(out[:, :2], np.broadcast_to(RED, (10, 2, 3)), atol=8)
    np.testing.assert_allclose(out[:, 9:], np.broadcast_to(BLUE, (10, 1, 3)), atol=8)
    # a tall image is cropped vertically the same way
    Image.fromarray(pixels.transpose(1, 0, 2).copy()).save(tmp_path / "tall.png")
    np.testing.assert_array_equal(load_image(tmp_path / "tall.png", 10), out.transpose(1, 0, 2))


def test_alpha_grey_and_exif_rotation(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3] = 0
    rgba[:2, ..., 3] = 255  # top half opaque black, bottom half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    out = load_image(tmp_path / "alpha.png", 4)
    assert (out[:2] == 0).all() and (out[2:] == 255).all()  # transparent -> white, not black
    Image.new("L", (4, 4), 77).save(tmp_path / "grey.png")
    assert (load_image(tmp_path / "grey.png", 4) == 77).all()
    # EXIF orientation 6 (rotate 90° clockwise to view): a 8x4 image with a red left half is
    # shown 4 wide, 8 tall with the red half on top.
    pixels = np.zeros((4, 8, 3), np.uint8)
    pixels[:, :4] = RED
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(tmp_path / "turned.png", exif=exif)
    shown = load_image(tmp_path / "turned.png", 4)  # 4x8 upright -> crop the middle 4 rows
    upright = np.asarray(Image.fromarray(pixels).transpose(Image.Transpose.ROTATE_270))
    np.testing.assert_array_equal(shown, upright[2:6])


def test_batches_are_deterministic_epochs_and_disjoint_shards(tmp_path):
    root = tmp_path / "numbers"
    for i in range(10):
        solid(root / f"{i:02d}.png", (i * 20, 0, 0), size=(8, 8))
        (root / f"{i:02d}.txt").write_text(f"image {i}")
    one = FolderStream(root, 8, batch_size=4, seed=3)
    # 10 images, global batch 4: steps 0..4 cover two epochs, each epoch a permutation
    seen = np.concatenate([one.indices(s) for s in range(5)])
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:]) == list(range(10))
    x, captions = one.batch(2)
    assert x.shape == (4, 3, 8, 8) and x.dtype.is_floating_point
    for img, caption in zip(x, captions):  # red channel encodes the index: i*20 -> [-1, 1]
        assert float(img[0, 0, 0]) == pytest.approx(int(caption.split()[1]) * 20 / 127.5 - 1, abs=1e-6)
    again = FolderStream(root, 8, batch_size=4, seed=3)
    assert np.array_equal(again.indices(7), one.indices(7))  # a pure function of the step
    assert not np.array_equal(FolderStream(root, 8, 4, seed=4).indices(0), one.indices(0))
    # two ranks with b = 2 split each global batch of 4 exactly
    r0, r1 = (FolderStream(root, 8, batch_size=2, seed=3, rank=r, world_size=2) for r in (0, 1))
    for step in range(6):
        assert np.array_equal(np.concatenate([r0.indices(step), r1.indices(step)]), one.indices(step))
    # lazily decoded (over the memory limit) gives the same batches
    lazy = FolderStream(root, 8, batch_size=4, seed=3, memory_limit=0)
    assert not lazy.in_memory and lazy.images is None
    assert all(np.array_equal(lazy.batch(s)[0].numpy(), one.batch(s)[0].numpy()) for s in range(3))


def test_horizontal_flips_are_optional_and_seeded(tmp_path):
    pixels = np.zeros((8, 8, 3), np.uint8)
    pixels[:, :4] = RED
    Image.fromarray(pixels).save(tmp_path / "half.png")
    (tmp_path / "half.txt").write_text("red on the left")
    plain = make_stream(f"folder:{tmp_path}", 8, 16, seed=0)
    assert all((plain.batch(s)[0][:, 0, :, 0] > 0).all() for s in range(3))  # never flipped
    flipping = make_stream(f"folder:{tmp_path}", 8, 16, seed=0, hflip=True)
    x = flipping.batch(0)[0]
    flipped = x[:, 0, 0, 0] < 0  # red moved to the right
    assert 0 < int(flipped.sum()) < 16
    assert np.array_equal(x[flipped].numpy(), x[~flipped][:1].flip(-1).expand(int(flipped.sum()), -1, -1, -1).numpy())
    assert np.array_equal(flipping.batch(0)[0].numpy(), x.numpy())


def test_unusable_folders_raise_one_sentence(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        scan_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="holds no png, jpg or webp image"):
        scan_folder(tmp_path / "empty")
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(UsageError, match="is not a folder"):
        scan_folder(tmp_path / "file.png")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.png").write_bytes(b"broken")
    (bad / "a.txt").write_text("a")
    solid(bad / "b.png", RED)  # readable but no caption
    with pytest.raises(UsageError, match=r"None of the 2 images .* \(1 no caption, 1 unreadable image\)"):
        FolderStream(bad, 8, 2)


@pytest.mark.parametrize("make, needle", [
    (lambda p: p / "missing", "does not exist"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "holds no png, jpg or webp image"),
])
def test_cli_bad_folders_exit_2(tmp_path, capsys, make, needle):
    path = make(tmp_path)
    code = main(["train", "--preset", "cpu-quick", "--dataset", f"folder:{path}", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and needle in err, err
    assert not (tmp_path / "run").exists()


def test_trainer_on_a_folder_logs_skipped_files(mixed, tmp_path, text_encoder):
    from diffusion_studio.training.trainer import Trainer

    cfg = tiny_config(dataset=f"folder:{mixed}", steps=2, batch_size=4, hflip=True)
    result = Trainer(cfg, tmp_path / "run", text_encoder=text_encoder).run()
    assert result.step == 2
    start = read_events(tmp_path / "run" / "events.jsonl")[0]
    assert start["dataset"]["images"] == 6 and start["dataset"]["skipped"] == 3
    assert start["dataset"]["skipped_by_reason"]["unreadable image"] == 2


def test_lazy_decoding_replaces_a_late_corrupt_file_with_a_matching_caption(tmp_path):
    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)  # incompressible: truncation hits pixels
    Image.fromarray(noisy).save(tmp_path / "a.png")
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "a.png").write_bytes(data[: len(data) // 2])  # the header still parses
    (tmp_path / "a.txt").write_text("broken")
    solid(tmp_path / "b.png", GREEN, size=(8, 8))
    (tmp_path / "b.txt").write_text("green")
    lazy = FolderStream(tmp_path, 8, batch_size=4, memory_limit=0)
    assert len(lazy) == 2 and lazy.skipped == 0  # not found out yet
    x, captions = lazy.batch(0)
    assert captions == ["green"] * 4  # "a" was replaced by the next readable example, caption too
    np.testing.assert_allclose(x[:, 1].numpy(), 170 / 127.5 - 1, atol=1e-6)
    assert lazy.skipped == 1 and lazy.describe()["skipped_by_reason"] == {"unreadable image": 1}
    eager = FolderStream(tmp_path, 8, batch_size=4)
    assert len(eager) == 1 and eager.describe()["skipped_by_reason"] == {"unreadable image": 1}


def test_a_link_back_up_is_scanned_once_and_limits_hold(tmp_path, monkeypatch):
    from diffusion_studio.training.datasets import folder

    root = tmp_path / "data"
    solid(root / "red_apple" / "one.png", RED)
    (root / "red_apple" / "loop").symlink_to(root, target_is_directory=True)  # like /proc/self/cwd
    (root / "linked").symlink_to(root / "red_apple", target_is_directory=True)
    scan = scan_folder(root)
    assert [(i.path.relative_to(root).as_posix(), i.caption) for i in scan.items] == [("linked/one.png", "linked")]
    deep = tmp_path / "deep"
    solid(deep / "/".join("d" * 5) / "x.png", RED)
    monkeypatch.setattr(folder, "MAX_DEPTH", 3)
    with pytest.raises(UsageError, match="nests deeper than 3 levels"):
        scan_folder(deep)
    monkeypatch.setattr(folder, "MAX_FILES", 0)
    with pytest.raises(UsageError, match="holds more than 0 files"):
        scan_folder(root)
