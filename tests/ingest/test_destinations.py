"""The destination policy against real name resolution and real sockets: which stream hosts a reader may reach,
that the check runs before every connection, and that FFmpeg follows neither redirects nor playlists to hosts
the policy never saw."""

from __future__ import annotations

import http.server
import ipaddress
import threading
from collections.abc import Iterator

import pytest

from ingest.clips import ClipSpec, IngestReport
from ingest.destinations import DestinationPolicy
from ingest.errors import DestinationRefused, DestinationUnresolved, InvalidVideoError, StreamError
from ingest.stream import ReconnectPolicy, StreamSpec, iter_stream_clips
from ingest.stream_urls import redact_url, scrub
from tests.listeners import CountingListener

SPEC = ClipSpec(clip_seconds=0.5, stride_seconds=0.5, sample_fps=4.0, size=(32, 24))
DEFAULT = DestinationPolicy()
LOCAL = DestinationPolicy.parse(["127.0.0.1/32"])


@pytest.mark.parametrize(("url", "rule"), [
    ("tcp://127.0.0.1:9000", "127.0.0.1 is a loopback address (127.0.0.0/8)"),
    ("rtsp://localhost/live", "localhost resolves to 127.0.0.1, which is a loopback address"),
    ("http://169.254.169.254/latest/meta-data/", "link-local (cloud metadata)"),
    ("http://[fd00:ec2::254]/latest/meta-data/", "cloud metadata"),
    ("http://[::1]:8080/", "::1 is a loopback address"),
    ("http://[::ffff:127.0.0.1]/", "loopback"),  # IPv4-mapped IPv6 is checked as IPv4
    ("tcp://0.0.0.0:9000", "unspecified"),
    ("tcp://2130706433:9000", "loopback"),  # 127.0.0.1 as one number: the resolver reads it, so do we
    ("tcp://0177.0.0.1:9000", "loopback"),  # octal
    ("rtsp://[fe80::1]/", "link-local"),
    ("udp://239.1.1.1:5000", "unsupported stream URL scheme 'udp'"),
    ("rtsp://224.0.0.1/", "multicast"),
    ("rtsp://255.255.255.255/", "reserved"),
    ("http://cam%2eward/x", "unusual characters"),
    ("file:///etc/passwd", "unsupported stream URL scheme 'file'"),
    ("concat:http://10.0.0.1/a|http://10.0.0.1/b", "unsupported stream URL scheme 'concat'"),
    ("subfile,,start,0,end,0,,:file:///etc/passwd", "unsupported stream URL scheme 'none'"),
    ("data:video/mp2t;base64,AAAA", "unsupported stream URL scheme 'data'"),
    ("http://u:pw@127.0.0.1:1/x?token=abc", "loopback"),
])
def test_default_policy_refuses(url: str, rule: str) -> None:
    with pytest.raises(InvalidVideoError) as excinfo:
        DEFAULT.check(url)
    assert rule in str(excinfo.value)
    assert "pw" not in str(excinfo.value) and "abc" not in str(excinfo.value)


def test_private_and_public_addresses_pass_by_default() -> None:
    assert DEFAULT.check("rtsp://10.20.0.5:554/ch1") == (ipaddress.ip_address("10.20.0.5"),)
    assert DEFAULT.check("rtsps://192.168.1.9/live")
    assert DEFAULT.check("https://[2001:db8::5]/cam.mjpg")


def test_unresolvable_host() -> None:
    with pytest.raises(DestinationUnresolved, match="does not resolve"):
        DEFAULT.check("rtsp://no-such-camera.invalid/live")


def test_only_an_entry_inside_the_special_range_unlocks_it() -> None:
    assert LOCAL.check("tcp://127.0.0.1:9000")
    assert LOCAL.check("tcp://localhost:9000")  # every address of the name (here: 127.0.0.1) is allowed
    with pytest.raises(DestinationRefused, match="127.0.0.2 is a loopback"):
        LOCAL.check("tcp://127.0.0.2:9000")
    everything = DestinationPolicy.parse(["0.0.0.0/0", "::/0", "localhost"])  # catch-alls name nothing special
    for url in ("tcp://127.0.0.1:1", "http://169.254.169.254/", "http://[::1]/", "tcp://localhost:1"):
        with pytest.raises(DestinationRefused):
            everything.check(url)
    metadata = DestinationPolicy.parse(["169.254.169.254/32"])
    assert metadata.check("http://169.254.169.254/")


def test_a_non_empty_list_allows_only_listed_destinations() -> None:
    ward = DestinationPolicy.parse(["10.20.0.0/16", "*.ward.example", "nvr.hospital.example"])
    assert ward.check("rtsp://10.20.3.4/ch1")
    with pytest.raises(DestinationRefused, match="10.30.0.1 is not in the stream allow-list"):
        ward.check("rtsp://10.30.0.1/ch1")
    with pytest.raises(DestinationRefused, match="not in"):
        ward.check("https://8.8.8.8/")
    # names: exact, or any name below a '*.' entry (not the domain itself); case and a trailing dot ignored
    assert ward._name_listed("cam-3.ward.example") and ward._name_listed("a.b.ward.example")
    assert ward._name_listed("NVR.hospital.example")
    assert not ward._name_listed("ward.example") and not ward._name_listed("evilward.example")
    assert not ward._name_listed("nvr.hospital.example.evil.org")


@pytest.mark.parametrize("entry", ["10.0.0.0/33", "10.0.0", "*", "cam*.ward", "a b", "::g/64"])
def test_bad_entries_are_refused(entry: str) -> None:
    with pytest.raises(ValueError, match="allow-list entry"):
        DestinationPolicy.parse([entry])


def test_redaction_and_scrubbing() -> None:
    url = "rtsp://admin:pa55word@10.0.0.7:554/live?token=t0ken123&channel=1"
    assert redact_url(url) == "rtsp://***@10.0.0.7:554/live?token=***&channel=***"
    message = f"Connection refused: '{url}' (auth pa55word, token t0ken123, user admin)"
    cleaned = scrub(message, url)
    assert "pa55word" not in cleaned and "t0ken123" not in cleaned and "admin" not in cleaned
    assert "rtsp://***@10.0.0.7:554/live" in cleaned


class _CountingPolicy(DestinationPolicy):
    """The real policy, counting its calls: shows *when* the reader checks."""

    calls: list[str]

    def check(self, url: str):  # type: ignore[no-untyped-def]
        self.calls.append(url)
        return super().check(url)


def test_destination_is_checked_before_every_connection() -> None:
    policy = _CountingPolicy(networks=LOCAL.networks)
    object.__setattr__(policy, "calls", [])
    report = IngestReport()
    with CountingListener() as camera:
        url = f"tcp://127.0.0.1:{camera.port}"
        retry = ReconnectPolicy(initial_delay=0.01, max_delay=0.02, max_attempts=3)
        with pytest.raises(StreamError, match="after 3 attempts"):
            next(iter_stream_clips(StreamSpec(url, open_timeout=2, read_timeout=2), SPEC, reconnect=retry,
                                   report=report, destinations=policy))
        assert camera.connections == 3
    assert len(policy.calls) == 3  # one check per connection: a re-pointed name is caught at the next one


def test_refused_destination_is_not_retried() -> None:
    with CountingListener() as loopback:
        retry = ReconnectPolicy(initial_delay=0.01, max_delay=0.02, max_attempts=50)
        with pytest.raises(DestinationRefused, match="loopback"):
            next(iter_stream_clips(f"tcp://localhost:{loopback.port}", SPEC, reconnect=retry, destinations=DEFAULT))
        assert loopback.connections == 0


@pytest.fixture
def web_camera() -> Iterator[tuple[int, CountingListener]]:
    """An http server on loopback whose answers point elsewhere: a redirect and an HLS playlist, both to a
    second (counting) listener that the stream URL never named."""
    with CountingListener() as elsewhere:
        target = f"http://127.0.0.1:{elsewhere.port}"

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                if self.path.startswith("/redirect"):
                    self.send_response(302)
                    self.send_header("Location", f"{target}/internal")
                    self.end_headers()
                    return
                body = f"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\n{target}/seg.ts\n#EXT-X-ENDLIST\n".encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/vnd.apple.mpegurl")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            yield int(server.server_address[1]), elsewhere
        finally:
            server.shutdown()
            server.server_close()


@pytest.mark.parametrize("path", ["/redirect", "/cam.m3u8"])
def test_no_hop_to_an_unchecked_host(web_camera: tuple[int, CountingListener], path: str) -> None:
    port, elsewhere = web_camera
    url = f"http://127.0.0.1:{port}{path}"
    once = ReconnectPolicy(initial_delay=0.01, max_delay=0.01, max_attempts=1)
    guarded = StreamSpec(url, open_timeout=2, read_timeout=2)
    with pytest.raises(StreamError):
        next(iter_stream_clips(guarded, SPEC, reconnect=once, destinations=LOCAL))
    assert elsewhere.connections == 0
    # The control: with redirects followed and any demuxer allowed, FFmpeg does reach the other host.
    open_door = StreamSpec(url, open_timeout=2, read_timeout=2, formats=None, follow_redirects=True)
    with pytest.raises((StreamError, InvalidVideoError)):
        next(iter_stream_clips(open_door, SPEC, reconnect=once, destinations=LOCAL))
    assert elsewhere.wait_for(1, timeout=5) >= 1
