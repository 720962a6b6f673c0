"""``load_folder``: a folder of class sub-folders, every kind of file, bad files skipped and reported, links."""

import os

import numpy as np
import pytest
from helpers import make_class_folder, write_16bit_png, write_good, write_rgba_png

from keras_transfer import data


@pytest.fixture
def folder(tmp_path, rng):
    bad = make_class_folder(str(tmp_path / "imgs"), rng)
    return str(tmp_path / "imgs"), bad


def test_load_folder_skips_and_reports_exactly_the_bad_files(folder):
    root, bad = folder
    ds = data.load_folder(root, 24, progress=False)
    assert {s.path for s in ds.skipped} == bad
    reasons = {os.path.basename(s.path): s.reason for s in ds.skipped}
    assert "0 bytes" in reasons["empty.jpg"]
    assert "not an image" in reasons["notes.jpg"]
    assert "decode" in reasons["truncated.jpg"] or "truncated" in reasons["truncated.jpg"]
    assert "extension" in reasons["readme.txt"]
    assert ds.class_names == ["blue", "red"]
    assert ds.images.shape == (len(ds), 24, 24, 3) and ds.images.dtype == np.uint8
    # 8 good + nested bmp + cmyk + rgba in red; 8 + gif + grey + 16-bit in blue
    assert ds.counts() == {"blue": 11, "red": 11}
    assert any(p.endswith(os.path.join("nested", "deep.bmp")) for p in ds.paths)


def test_every_mode_becomes_rgb_with_the_right_colours(folder):
    root, _ = folder
    ds = data.load_folder(root, 16, progress=False)
    by_name = {os.path.basename(p): img for p, img in zip(ds.paths, ds.images)}
    assert by_name["cmyk.jpg"].mean(axis=(0, 1))[0] > 150          # still red
    assert by_name["palette.gif"].mean(axis=(0, 1))[2] > 150       # still blue
    grey = by_name["grey.png"]
    assert np.array_equal(grey[..., 0], grey[..., 1])              # grey -> R=G=B
    np.testing.assert_array_equal(by_name["sixteen.png"], 255)     # 65535 -> 255, not clipped garbage


def test_16bit_is_scaled_not_clipped(tmp_path):
    image = data.read_image(write_16bit_png(str(tmp_path / "half.png"), value=32768), (8, 8))
    assert abs(int(image[0, 0, 0]) - 128) <= 1


def test_transparent_pixels_become_white(tmp_path):
    image = data.read_image(write_rgba_png(str(tmp_path / "a.png")), (20, 20))
    np.testing.assert_array_equal(image[15, 5], [255, 255, 255])
    np.testing.assert_array_equal(image[2, 5], [200, 0, 0])


def test_refuses_empty_single_class_and_unusable_class(tmp_path, rng):
    (tmp_path / "none").mkdir()
    with pytest.raises(ValueError, match="0 class folder"):
        data.load_folder(str(tmp_path / "none"), 16)
    single = tmp_path / "single" / "only"
    single.mkdir(parents=True)
    write_good(str(single / "a.png"), rng)
    with pytest.raises(ValueError, match=r"1 class folder.*only.*at least 2"):
        data.load_folder(str(tmp_path / "single"), 16)
    (tmp_path / "single" / "broken").mkdir()
    open(tmp_path / "single" / "broken" / "x.jpg", "wb").close()
    with pytest.raises(ValueError, match=r"no usable image.*broken"):
        data.load_folder(str(tmp_path / "single"), 16, progress=False)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        data.load_folder(str(tmp_path / "missing"), 16)


def test_skipped_report_csv(folder, tmp_path):
    root, bad = folder
    ds = data.load_folder(root, 16, progress=False)
    path = tmp_path / "skipped.csv"
    data.write_skipped_report(ds.skipped, str(path))
    lines = path.read_text().splitlines()
    assert lines[0] == "path,reason" and len(lines) == 1 + len(bad)


def test_no_single_file_ends_a_run(tmp_path, rng, monkeypatch):
    """Failures the loader never raised before: a broken symlink (FileNotFoundError before
    decoding), a decompression bomb (PIL's DecompressionBombError is no OSError) and anything
    else a decoder may raise (RuntimeError here). Each is skipped with its reason; the rest load."""
    from helpers import write_bomb_png

    from keras_transfer.data import images

    for c in ("a", "b"):
        os.makedirs(tmp_path / c)
        for i in range(3):
            write_good(str(tmp_path / c / f"{i}.png"), rng)
    os.symlink(str(tmp_path / "gone.png"), str(tmp_path / "a" / "dangling.png"))
    write_bomb_png(str(tmp_path / "b" / "bomb.png"))
    write_good(str(tmp_path / "b" / "cursed.png"), rng)
    real = images.decode_file

    def flaky(path):
        if path.endswith("cursed.png"):
            raise RuntimeError("decoder exploded")
        return real(path)

    monkeypatch.setattr(images, "decode_file", flaky)
    ds = data.load_folder(str(tmp_path), 16, progress=False)
    reasons = {os.path.basename(s.path): s.reason for s in ds.skipped}
    assert set(reasons) == {"dangling.png", "bomb.png", "cursed.png"}
    assert reasons["dangling.png"].startswith("FileNotFoundError")
    assert "DecompressionBomb" in reasons["bomb.png"]
    assert reasons["cursed.png"] == "RuntimeError: decoder exploded"
    assert ds.counts() == {"a": 3, "b": 3}


def test_photos_are_used_upright_as_a_viewer_shows_them(tmp_path):
    from helpers import write_exif_rotated_jpeg

    path = write_exif_rotated_jpeg(str(tmp_path / "rotated.jpg"), size=(40, 20), orientation=6)
    from keras_transfer.data import images

    upright = images.decode_file(path)
    assert upright.shape == (40, 20, 3)  # stored 40 wide x 20 high; EXIF 6 turns it a quarter
    assert upright[:20].mean(axis=(0, 1))[0] > 200 and upright[20:].mean(axis=(0, 1))[0] < 60  # red on top


def test_the_loader_resizes_with_the_shared_antialiased_resize(tmp_path, rng):
    from helpers import write_textured

    from keras_transfer.data import images

    os.makedirs(tmp_path / "a")
    os.makedirs(tmp_path / "b")
    path = write_textured(str(tmp_path / "a" / "t.png"), rng)
    write_textured(str(tmp_path / "b" / "u.png"), rng)
    loaded = data.load_folder(str(tmp_path), 32, progress=False)
    full = images.decode_file(path)
    np.testing.assert_array_equal(loaded.images[loaded.paths.index(path)], images.resize_array(full, (32, 32)))


def _two_classes(root, rng, n=4):
    for c, colour in (("red", (220, 30, 30)), ("blue", (30, 30, 220))):
        os.makedirs(root / c, exist_ok=True)
        for i in range(n):
            write_good(str(root / c / f"{i}.png"), rng, colour=colour)


@pytest.mark.parametrize("link,says", [("..", "holds the data folder itself"), ("../..", "holds the data folder itself"),
                                       ("red", "hold the same images"), ("red/inner", "hold the same images")])
def test_a_class_folder_linking_to_the_data_or_another_class_is_refused(tmp_path, rng, link, says):
    root = tmp_path / "data"
    _two_classes(root, rng)
    os.makedirs(root / "red" / "inner")
    write_good(str(root / "red" / "inner" / "x.png"), rng)
    os.symlink(link if link.startswith("..") else os.path.join(root, link), root / "twice")
    with pytest.raises(ValueError, match=rf"'twice'.*{says}.*Remove the link. Received: .*twice$"):
        data.load_folder(str(root), 8, progress=False)


def test_links_inside_a_class_are_followed_once_and_the_rest_reported(tmp_path, rng):
    root = tmp_path / "data"
    _two_classes(root, rng)
    outside = tmp_path / "more_red"
    outside.mkdir()
    write_good(str(outside / "m.png"), rng, colour=(220, 30, 30))
    os.symlink(outside, root / "red" / "more")          # followed: its image is read
    os.symlink(root / "red", root / "red" / "loop")      # a cycle: not read again
    os.symlink(outside, root / "red" / "more_again")    # a second link to the same folder
    os.symlink(root / "blue", root / "red" / "blues")    # into another class: not given a second label
    os.symlink(root / "red" / "0.png", root / "red" / "copy.png")
    loaded = data.load_folder(str(root), 8, progress=False)
    by_class = {c: sorted(os.path.relpath(p, root) for p, l in zip(loaded.paths, loaded.labels) if loaded.class_names[l] == c)
                for c in loaded.class_names}
    assert by_class["red"] == ["red/0.png", "red/1.png", "red/2.png", "red/3.png", "red/more/m.png"]
    assert by_class["blue"] == ["blue/0.png", "blue/1.png", "blue/2.png", "blue/3.png"]
    reasons = {os.path.relpath(s.path, root): s.reason for s in loaded.skipped}
    assert set(reasons) == {"red/loop", "red/more_again", "red/blues", "red/copy.png"}
    assert "not read twice" in reasons["red/loop"] and "read once" in reasons["red/copy.png"]


def test_a_class_too_small_to_split_is_named_before_training(tmp_path, rng):
    root = tmp_path / "data"
    _two_classes(root, rng, n=10)
    os.makedirs(root / "tiny")
    for i in range(2):
        write_good(str(root / "tiny" / f"{i}.png"), rng)
    splits = data.from_directory(str(root), 8, 0.2, 0.2, progress=False)
    assert splits.test.counts()["tiny"] == 0
    summary = splits.summary()
    assert "no test image of tiny (a class needs 3 images or more to be split)" in summary
    assert "no validation image of tiny" in summary

