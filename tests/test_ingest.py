import zipfile
from pathlib import Path

import pytest

from pipeline.errors import BadInputError
from pipeline.ingest.sources import IngestLimits, collect_sources, is_safe_member_name, parse_csv
from support.images import jpeg_bytes

LIMITS = IngestLimits()


def write_zip(path: Path, members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def test_zip_finds_images_at_any_depth_and_skips_junk(tmp_path):
    archive = write_zip(tmp_path / "shoot.zip", {
        "a.jpg": jpeg_bytes(seed=1),
        "deep/er/b.PNG": jpeg_bytes(seed=2),
        "__MACOSX/deep/._b.PNG": b"resource fork",
        ".DS_Store": b"junk",
        "deep/.hidden.jpg": b"hidden",
        "readme.txt": b"hello",
    })
    report = collect_sources([archive], LIMITS)
    assert [item.source for item in report.items] == ["shoot.zip:a.jpg", "shoot.zip:deep/er/b.PNG"]
    assert all(item.error is None and item.ref.kind == "zip" for item in report.items)
    assert report.notices == ["shoot.zip: skipped readme.txt (not an image)"]


def test_manifest_maps_files_to_skus_and_hints(tmp_path):
    manifest = "sku,image,title,brand\nSKU-1,photos/a.jpg,Red tee,Acme\nSKU-2,photos/gone.jpg,,\n"
    archive = write_zip(tmp_path / "m.zip", {"photos/a.jpg": jpeg_bytes(), "photos/b.jpg": jpeg_bytes(seed=3), "manifest.csv": manifest.encode()})
    items = {item.source: item for item in collect_sources([archive], LIMITS).items}
    assert items["m.zip:photos/a.jpg"].sku == "SKU-1"
    assert items["m.zip:photos/a.jpg"].hints == {"title": "Red tee", "brand": "Acme"}
    assert items["m.zip:photos/b.jpg"].sku is None
    assert "not in the zip" in items["m.zip:photos/gone.jpg"].error


def test_zip_slip_names_are_rejected_as_error_rows(tmp_path):
    archive = write_zip(tmp_path / "evil.zip", {"../../etc/evil.jpg": jpeg_bytes(), "/abs.jpg": jpeg_bytes(), "ok.jpg": jpeg_bytes()})
    report = collect_sources([archive], LIMITS)
    errors = [item for item in report.items if item.error]
    assert len(errors) == 2 and all("Unsafe file path" in item.error for item in errors)
    assert [item.source for item in report.items if not item.error] == ["evil.zip:ok.jpg"]


@pytest.mark.parametrize("name, safe", [("a/b.jpg", True), ("../x.jpg", False), ("a/../../x.jpg", False), ("/x.jpg", False), ("C:x.jpg", False), ("a\\..\\x.jpg", False)])
def test_member_name_safety(name, safe):
    assert is_safe_member_name(name) is safe


def test_zip_bomb_and_oversize_members_are_refused_from_headers(tmp_path):
    archive = write_zip(tmp_path / "bomb.zip", {"bomb.jpg": b"\0" * 20_000_000, "ok.jpg": jpeg_bytes()})
    report = collect_sources([archive], IngestLimits(max_file_bytes=30_000_000, zip_max_ratio=100))
    bomb = next(item for item in report.items if item.source.endswith("bomb.jpg"))
    assert "zip bomb" in bomb.error
    report = collect_sources([archive], IngestLimits(max_file_bytes=1_000_000, zip_max_ratio=10_000))
    bomb = next(item for item in report.items if item.source.endswith("bomb.jpg"))
    assert "limit is 1.0 MB" in bomb.error


def test_zip_total_size_cap(tmp_path):
    members = {f"{i}.jpg": jpeg_bytes(seed=i) for i in range(3)}
    archive = write_zip(tmp_path / "big.zip", members, compression=zipfile.ZIP_STORED)
    cap = sum(len(v) for v in members.values()) - 1
    report = collect_sources([archive], IngestLimits(zip_max_total_bytes=cap))
    failed = [item for item in report.items if item.error]
    assert [item.source for item in failed] == ["big.zip:2.jpg"]
    assert "the rest were skipped" in failed[0].error


def test_not_a_zip_is_one_error_row(tmp_path):
    fake = tmp_path / "photos.zip"
    fake.write_bytes(b"this is not a zip")
    report = collect_sources([fake], LIMITS)
    assert len(report.items) == 1 and report.items[0].error == "This file is not a valid zip archive."


def test_csv_with_bom_semicolons_quotes_and_blank_lines():
    data = '\ufeffSKU;Image;Title;Notes\n\n"A-1";"a.jpg";"Shirt; blue";"said ""hi"""\n\nA-2;b.jpg;;\n'.encode("utf-8")
    rows = parse_csv(data)
    assert [(r.sku, r.image) for r in rows] == [("A-1", "a.jpg"), ("A-2", "b.jpg")]
    assert rows[0].hints == {"title": "Shirt; blue", "notes": 'said "hi"'}


def test_csv_missing_column_names_the_expected_columns(tmp_path):
    path = tmp_path / "products.csv"
    path.write_text("sku,snapshot\nA,a.jpg\n")
    report = collect_sources([path], LIMITS)
    assert len(report.items) == 1
    assert report.items[0].error.startswith("The CSV is missing the column(s) image. Expected columns: sku, image")
    # issue 16 item 6: the accepted names are listed, and what the file had
    assert "accepted names: image: image, image_url, image_link, Image Src" in report.items[0].error
    assert report.items[0].error.endswith("found: sku, snapshot.")


def test_csv_rows_resolve_files_urls_s3_and_zip_members(tmp_path):
    (tmp_path / "local.jpg").write_bytes(jpeg_bytes())
    archive = write_zip(tmp_path / "pics.zip", {"in/zip.jpg": jpeg_bytes(seed=4), "in/other.jpg": jpeg_bytes(seed=5)})
    csv_path = tmp_path / "list.csv"
    csv_path.write_text(
        "sku,image\nL,local.jpg\nZ,in/zip.jpg\nU,https://example.com/p.jpg\nS,s3://bucket/key.jpg\n"
        "T,../../etc/passwd\nA,/etc/passwd\nF,file:///etc/passwd\nM,missing.jpg\n,local.jpg\n"
    )
    report = collect_sources([csv_path, archive], LIMITS)
    by_sku = {item.sku: item for item in report.items if item.sku}
    assert by_sku["L"].ref.kind == "file"
    assert (by_sku["Z"].ref.kind, by_sku["Z"].ref.member) == ("zip", "in/zip.jpg")
    assert by_sku["U"].ref.kind == "url" and by_sku["S"].ref.kind == "s3"
    assert "outside the uploaded files" in by_sku["T"].error
    assert "outside the uploaded files" in by_sku["A"].error
    assert "only http(s)" in by_sku["F"].error
    assert "was not found" in by_sku["M"].error
    assert any(item.error == "Line 10: the sku is empty." for item in report.items)
    # the zip member named by the CSV is tagged once (with its SKU); the other member on its own
    zip_sources = [item.source for item in report.items if item.ref and item.ref.kind == "zip"]
    assert zip_sources == ["list.csv line 3", "pics.zip:in/other.jpg"]


def test_duplicate_skus_warn_but_keep_both(tmp_path):
    for name in ("a.jpg", "b.jpg"):
        (tmp_path / name).write_bytes(jpeg_bytes())
    csv_path = tmp_path / "dups.csv"
    csv_path.write_text("sku,image\nX,a.jpg\nX,b.jpg\n")
    report = collect_sources([csv_path], LIMITS)
    assert len(report.items) == 2 and all(item.error is None for item in report.items)
    assert report.notices == ["SKU X appears 2 times (dups.csv line 2, dups.csv line 3); each is tagged separately."]


def test_batch_limit_is_reported(tmp_path):
    archive = write_zip(tmp_path / "many.zip", {f"{i}.jpg": b"x" for i in range(5)})
    report = collect_sources([archive], IngestLimits(max_images=3))
    assert len(report.items) == 3
    assert "at most 3 images; the last 2 were not added" in report.notices[-1]


def test_unsupported_upload_type_is_an_error_row(tmp_path):
    path = tmp_path / "notes.docx"
    path.write_bytes(b"doc")
    report = collect_sources([path], LIMITS)
    assert "Not a supported file" in report.items[0].error


# --- issue 15: CSV cells, encodings, delimiters; zip duplicates, nested zips, CSV + uploaded photos

from pipeline.ingest import sources as ingest  # noqa: E402
from pipeline.ingest.sources import MAX_CELL_CHARS  # noqa: E402
from pipeline.ingest.zips import OpenZips, read_zip_entry  # noqa: E402


def test_an_oversized_cell_fails_its_row_not_the_batch(tmp_path):
    (tmp_path / "a.jpg").write_bytes(jpeg_bytes())
    path = tmp_path / "products.csv"
    path.write_text(f"sku,image,notes\nA,a.jpg,fine\nB,a.jpg,{'x' * 200_000}\nC,https://example.com/c.jpg,ok\n")
    report = collect_sources([path], LIMITS)
    by_sku = {item.sku: item for item in report.items}
    assert by_sku["A"].error is None and by_sku["C"].error is None
    assert by_sku["B"].error == f"Line 3: the notes cell is 200,000 characters long; the limit is {MAX_CELL_CHARS:,}."


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le-bom", "utf-16-be-bom", "utf-8-sig", "utf-16-le"])
def test_csv_encodings_are_read(encoding):
    text = "sku,image,title\nA-1,a.jpg,Café crème\n"
    boms = {"utf-16-le-bom": b"\xff\xfe" + text.encode("utf-16-le"), "utf-16-be-bom": b"\xfe\xff" + text.encode("utf-16-be")}
    data = boms.get(encoding) or text.encode(encoding)
    rows = parse_csv(data)
    assert [(r.sku, r.image, r.hints) for r in rows] == [("A-1", "a.jpg", {"title": "Café crème"})]


@pytest.mark.parametrize("delimiter", ["\t", ";", "|", ","])
def test_csv_delimiter_is_detected(delimiter):
    data = delimiter.join(["sku", "image", "title"]) + "\n" + delimiter.join(["A", "a.jpg", '"Shirt, blue; big"']) + "\n"
    rows = parse_csv(data.encode())
    assert [(r.sku, r.image, r.hints) for r in rows] == [("A", "a.jpg", {"title": "Shirt, blue; big"})]


def test_zip_members_with_the_same_name_stay_apart(tmp_path):
    path = tmp_path / "dups.zip"
    with pytest.warns(UserWarning, match="Duplicate name"):
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("a.jpg", b"first")
            archive.writestr("b.jpg", b"other")
            archive.writestr("a.jpg", b"second")
    report = collect_sources([path], LIMITS)
    items = [item for item in report.items if item.source.startswith("dups.zip:a.jpg")]
    assert [item.source for item in items] == ["dups.zip:a.jpg (copy 1 of 2)", "dups.zip:a.jpg (copy 2 of 2)"]
    assert len({item.ref.member for item in items}) == 2
    contents = [read_zip_entry(path, item.ref.member, max_bytes=1000, max_ratio=100, zips=OpenZips()) for item in items]
    assert contents == [b"first", b"second"]
    assert read_zip_entry(path, "b.jpg", max_bytes=1000, max_ratio=100) == b"other"
    assert any("appear more than once" in notice for notice in report.notices)
    # what the runner reads for each item (pipeline.ingest.fetch.read_source) keeps them apart too
    from pipeline.ingest.fetch import FetchLimits, read_source

    assert [read_source(item.ref, FetchLimits(max_bytes=1000)) for item in items] == [b"first", b"second"]


def test_a_photo_uploaded_with_the_csv_naming_it_is_tagged_once(tmp_path):
    for name in ("a.jpg", "b.jpg"):
        (tmp_path / name).write_bytes(jpeg_bytes())
    csv_path = tmp_path / "list.csv"
    csv_path.write_text("sku,image\nSKU-A,a.jpg\n")
    report = collect_sources([tmp_path / "a.jpg", csv_path, tmp_path / "b.jpg"], LIMITS)
    assert [(item.source, item.sku) for item in report.items] == [("list.csv line 2", "SKU-A"), ("b.jpg", None)]


def test_a_zip_inside_the_zip_is_listed_as_rejected_with_the_reason(tmp_path):
    inner = write_zip(tmp_path / "inner.zip", {"x.jpg": jpeg_bytes()})
    outer = write_zip(tmp_path / "outer.zip", {"inner.zip": inner.read_bytes(), "ok.jpg": jpeg_bytes()})
    report = collect_sources([outer], LIMITS)
    rejected = [item for item in report.items if item.error]
    assert [item.source for item in rejected] == ["outer.zip:inner.zip"]
    assert "zip inside the zip" in rejected[0].error


def test_members_are_read_with_one_central_directory_read_per_zip(tmp_path, monkeypatch):
    path = write_zip(tmp_path / "many.zip", {f"{i}.jpg": bytes([i]) * 10 for i in range(20)})
    opened = []

    class CountingZipFile(zipfile.ZipFile):
        def __init__(self, *args, **kwargs):
            opened.append(args[0])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(ingest.zipfile, "ZipFile", CountingZipFile)
    report = collect_sources([path], LIMITS)
    zips = OpenZips()
    data = [read_zip_entry(path, item.ref.member, max_bytes=100, max_ratio=100, zips=zips) for item in report.items]
    assert data == [bytes([i]) * 10 for i in range(20)]
    assert len(opened) == 2  # one listing, one reader for all 20 members


def test_read_zip_entry_refuses_a_member_ref_that_names_another_entry(tmp_path):
    path = write_zip(tmp_path / "z.jpg.zip", {"a.jpg": b"a", "b.jpg": b"b"})
    with pytest.raises(BadInputError, match="missing from the zip"):
        read_zip_entry(path, "a.jpg\\1", max_bytes=100, max_ratio=100, zips=OpenZips())


def test_csv_rows_past_the_batch_limit_are_counted_in_the_notice(tmp_path):
    path = tmp_path / "many.csv"
    path.write_text("sku,image\n" + "".join(f"S{i},https://example.com/{i}.jpg\n" for i in range(10)))
    report = collect_sources([path], IngestLimits(max_images=4))
    assert [item.sku for item in report.items] == ["S0", "S1", "S2", "S3"]
    assert "at most 4 images; the last 6 were not added" in report.notices[-1]


# --- issue 16 item 6: column aliases (image_url, Image Src, Variant SKU, …) and which column was used

from pipeline.ingest.sources import COLUMN_ALIASES, column_key  # noqa: E402


@pytest.mark.parametrize("image_header", ["image_url", "image_link", "url", "Image Src", "image", "Image URL", "photo", "picture", "img", "IMAGE-URL"])
@pytest.mark.parametrize("sku_header", ["SKU", "Variant SKU", "id", "product_id", "handle"])
def test_common_feed_column_names_are_accepted(image_header, sku_header):
    data = f"{sku_header},{image_header},Name,Vendor,Product Type,Description\nA-1,https://example.com/a.jpg,Tee,Acme,Shirts,Soft\n"
    rows = parse_csv(data.encode())
    assert [(r.sku, r.image) for r in rows] == [("A-1", "https://example.com/a.jpg")]
    assert rows[0].hints == {"title": "Tee", "brand": "Acme", "category": "Shirts", "notes": "Soft"}


def test_the_notice_says_which_columns_were_used(tmp_path):
    (tmp_path / "a.jpg").write_bytes(jpeg_bytes())
    path = tmp_path / "products.csv"
    path.write_text("Handle,Variant SKU,Image Src,Title\ntee,T-1,a.jpg,Tee\n")
    report = collect_sources([path], LIMITS)
    assert [(item.sku, item.error) for item in report.items] == [("T-1", None)]
    assert report.notices == [
        "products.csv: photos from column 'Image Src', SKUs from 'Variant SKU' (also possible: 'Handle'; "
        "the first in this order wins: " + ", ".join(COLUMN_ALIASES["sku"]) + ")"
    ]
    path.write_text("Variant SKU,Image Src,Title\nT-1,a.jpg,Tee\n")
    assert collect_sources([path], LIMITS).notices == ["products.csv: photos from column 'Image Src', SKUs from 'Variant SKU'"]


def test_several_possible_image_columns_pick_by_priority_and_say_so():
    notices: list[str] = []
    rows = parse_csv(b"sku,url,photo,image_link\nA,https://shop.example/a,https://cdn.example/p.jpg,https://cdn.example/a.jpg\n", notices=notices)
    assert rows[0].image == "https://cdn.example/a.jpg"  # image_link comes before photo and url
    # `url` is the last alias of both image and link: with a photo column present it is the product page
    assert rows[0].hints == {"link": "https://shop.example/a"}
    assert notices == [
        "photos from column 'image_link' (also possible: 'photo'; the first in this order wins: "
        + ", ".join(COLUMN_ALIASES["image"]) + "), SKUs from 'sku'; link from 'url'"
    ]


def test_a_plain_header_adds_no_notice_and_a_manifest_alias_is_reported(tmp_path):
    notices: list[str] = []
    parse_csv(b"SKU,Image,title\nA,a.jpg,x\n", notices=notices)
    assert notices == []
    archive = write_zip(tmp_path / "m.zip", {"a.jpg": jpeg_bytes(), "manifest.csv": b"product_id;img\nP-1;a.jpg\n"})
    report = collect_sources([archive], LIMITS)
    assert [item.sku for item in report.items] == ["P-1"]
    assert report.notices == ["m.zip:manifest.csv: photos from column 'img', SKUs from 'product_id'"]


def test_no_header_name_is_an_alias_of_two_columns():
    keys = [column_key(alias) for aliases in COLUMN_ALIASES.values() for alias in aliases]
    # the one exception: `url` is the image's last alias and the link's last (a cell is read as one column only)
    assert [key for key in set(keys) if keys.count(key) > 1] == ["url"]
    assert COLUMN_ALIASES["image"][-1] == COLUMN_ALIASES["link"][-1] == "url"


# --- issue 16 item 5: staging rejects corrupt photos and private URLs before anything runs

import socket  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

from pipeline.ingest.sources import stage_sources  # noqa: E402


def staged(paths, *, allow_private_urls=False, **options):
    return stage_sources(collect_sources(paths, LIMITS), allow_private_urls=allow_private_urls, **options)


def test_a_corrupt_photo_is_rejected_at_staging_with_a_plain_reason(tmp_path):
    (tmp_path / "good.jpg").write_bytes(jpeg_bytes())
    (tmp_path / "broken.jpg").write_bytes(b"not really a jpeg")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "cut.jpg").write_bytes(jpeg_bytes()[:6])  # the header itself is cut off
    (tmp_path / "named.jpg").write_bytes(b"\x89PNG\r\n\x1a\n garbage")  # a CSV row names this one
    csv_path = tmp_path / "list.csv"
    csv_path.write_text("sku,image\nN,named.jpg\n")
    report = staged([tmp_path / name for name in ("good.jpg", "broken.jpg", "empty.png", "cut.jpg")] + [csv_path])
    errors = {item.source: item.error for item in report.items}
    assert errors["good.jpg"] is None
    assert errors["broken.jpg"] == "This file is not a readable image (supported: JPEG, PNG, WebP, GIF, TIFF, BMP, HEIC)."
    assert errors["empty.png"] == "The file is empty (0 bytes)."
    assert errors["cut.jpg"] is not None and errors["list.csv line 2"] is not None
    assert collect_sources([tmp_path / "broken.jpg"], LIMITS).items[0].error is None  # ingest alone reads no bytes


def test_a_zip_with_a_corrupt_member_is_rejected_at_staging(tmp_path):
    archive = write_zip(tmp_path / "shoot.zip", {"a.jpg": jpeg_bytes(), "b.jpg": b"\xff\xd8\xff garbage", "c.png": jpeg_bytes(seed=3)})
    report = staged([archive])
    errors = {item.source: item.error for item in report.items}
    assert errors["shoot.zip:a.jpg"] is None and errors["shoot.zip:c.png"] is None  # the content counts, not the name
    assert errors["shoot.zip:b.jpg"] is not None and "image" in errors["shoot.zip:b.jpg"]


def test_staging_reads_headers_only(tmp_path, monkeypatch):
    archive = write_zip(tmp_path / "shoot.zip", {f"{i}.jpg": jpeg_bytes(seed=i) for i in range(3)})
    from PIL import ImageFile

    loads = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: loads.append(self))
    assert all(item.error is None for item in staged([archive]).items)
    assert loads == []  # no pixel was decoded


def fake_resolver(table, calls=None):
    def resolve(host, port, type=0):
        if calls is not None:
            calls.append(host)
        if host not in table:
            raise socket.gaierror("not found")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)) for address in table[host]]

    return resolve


def test_private_and_loopback_urls_are_rejected_at_staging(tmp_path):
    path = tmp_path / "feed.csv"
    path.write_text(
        "sku,image_url\nA,http://127.0.0.1:8080/a.jpg\nB,http://169.254.169.254/latest/meta-data/\nC,https://cdn.example.com/c.jpg\n"
        "D,http://intranet.example/d.jpg\nE,https://gone.example/e.jpg\nF,http://[::1]/f.jpg\nG,http://0x7f.1/g.jpg\nH,http://user:pw@cdn.example.com/h.jpg\n"
    )
    resolve = fake_resolver({"cdn.example.com": ["93.184.216.34"], "intranet.example": ["93.184.216.35", "10.1.2.3"]})
    errors = {item.sku: item.error for item in staged([path], resolve=resolve).items}
    private = "The image URL points to a private or internal address ({}); only public web addresses are allowed."
    assert errors["A"] == private.format("127.0.0.1")
    assert errors["B"] == private.format("169.254.169.254")
    assert errors["D"] == private.format("intranet.example")  # any private address refuses the host, as fetch does
    assert errors["F"] == private.format("::1") and errors["G"] == private.format("0x7f.1")
    assert errors["H"] == "Image URLs with embedded credentials are not allowed."
    assert errors["C"] is None and errors["E"] is None  # public, and not found (fetch decides later): ready
    allowed = {item.sku: item.error for item in staged([path], resolve=resolve, allow_private_urls=True).items}
    assert allowed == errors | {key: None for key in "ABDFG"}  # ALLOW_PRIVATE_URLS: only the credentials rule stays


def test_staging_resolves_a_bounded_number_of_hosts_within_a_bounded_time(tmp_path):
    path = tmp_path / "feed.csv"
    path.write_text("sku,image\n" + "".join(f"S{i},https://h{i}.example/{i}.jpg\n" for i in range(30)) + "L,http://slow.example/l.jpg\n")
    calls: list[str] = []
    hang = threading.Event()

    def resolve(host, port, type=0):
        calls.append(host)
        if host == "h0.example":
            hang.wait(5)  # a resolver that does not answer
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.1", port))]

    started = time.monotonic()
    report = staged([path], resolve=resolve, max_hosts=5, resolve_timeout_s=0.3)
    hang.set()
    assert time.monotonic() - started < 2
    assert sorted(calls) == sorted(f"h{i}.example" for i in range(5))
    errors = {item.sku: item.error for item in report.items}
    assert errors["S0"] is None  # not answered in time: checked at fetch
    assert all("private or internal" in errors[f"S{i}"] for i in range(1, 5))
    assert all(errors[f"S{i}"] is None for i in range(5, 30)) and errors["L"] is None
    assert "26 more image host(s) were not looked up yet" in report.notices[-1]


# --- issue 19: product-feed columns (link, price, availability, condition, gender, age_group, size) kept as hints

from pipeline.ingest.sources import HINT_COLUMNS  # noqa: E402

FEED_HINTS = ("link", "price", "availability", "condition", "gender", "age_group", "size")


def test_feed_columns_under_their_google_names_are_kept_any_case_without_a_notice():
    notices: list[str] = []
    rows = parse_csv(b"ID,Image_Link,TITLE,Link,Price,AVAILABILITY,Condition,Gender,Age_Group,Size\n"
                     b"S-1,https://cdn.example/s1.jpg,Tee,https://shop.example/s1,19.99 USD,in_stock,new,female,adult,M\n",
                     notices=notices)
    assert (rows[0].sku, rows[0].image) == ("S-1", "https://cdn.example/s1.jpg")
    assert rows[0].hints == {"title": "Tee", "link": "https://shop.example/s1", "price": "19.99 USD", "availability": "in_stock",
                             "condition": "new", "gender": "female", "age_group": "adult", "size": "M"}
    assert notices == ["photos from column 'Image_Link', SKUs from 'ID'"]  # the hints are under their own names: not listed
    assert set(FEED_HINTS) <= set(HINT_COLUMNS)


def test_shopify_export_columns_become_feed_hints_and_the_notice_names_each():
    notices: list[str] = []
    header = "Handle,Variant SKU,Image Src,Title,Vendor,Variant Price,Google Shopping / Gender,Google Shopping / Age Group,Google Shopping / Condition,product_url"
    rows = parse_csv(f"{header}\ntee,T-1,https://cdn.example/t.jpg,Tee,Acme,25.00 GBP,Unisex,Kids,new,https://shop.example/tee\n".encode(),
                     notices=notices)
    assert rows[0].hints == {"title": "Tee", "brand": "Acme", "price": "25.00 GBP", "gender": "Unisex", "age_group": "Kids",
                             "condition": "new", "link": "https://shop.example/tee"}
    [notice] = notices
    for said in ("photos from column 'Image Src'", "link from 'product_url'", "price from 'Variant Price'",
                 "gender from 'Google Shopping / Gender'", "age_group from 'Google Shopping / Age Group'",
                 "condition from 'Google Shopping / Condition'", "brand from 'Vendor'"):
        assert said in notice, (said, notice)


def test_url_alone_is_still_the_photo_and_beside_a_photo_column_it_is_the_product_page(tmp_path):
    rows = parse_csv(b"sku,url,price\nA,https://cdn.example/a.jpg,5 EUR\n")
    assert rows[0].image == "https://cdn.example/a.jpg" and rows[0].hints == {"price": "5 EUR"}  # no link made up from the photo
    notices: list[str] = []
    rows = parse_csv(b"sku,photo,URL\nA,https://cdn.example/a.jpg,https://shop.example/a\n", notices=notices)
    assert rows[0].image == "https://cdn.example/a.jpg" and rows[0].hints == {"link": "https://shop.example/a"}
    assert notices == ["photos from column 'photo', SKUs from 'sku'; link from 'URL'"]
    # and the zip manifest / collect_sources path keeps them on the item
    (tmp_path / "a.jpg").write_bytes(jpeg_bytes())
    (tmp_path / "list.csv").write_text("sku,image,link,availability\nA,a.jpg,https://shop.example/a,out of stock\n")
    [item] = collect_sources([tmp_path / "list.csv"], LIMITS).items
    assert item.error is None and item.hints == {"link": "https://shop.example/a", "availability": "out of stock"}
