"""Pins the Twisted behaviour logproxy.http.streaming relies on, and the body producer.

If a Twisted upgrade changes when gotLength/handleContentChunk/requestReceived run or
what the channel holds at that point, these fail before anything subtler does.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.iweb import UNKNOWN_LENGTH

from logproxy.http.streaming import StreamingRequestMixin
from logproxy.proxy.body import PENDING_LIMIT, RequestBodyProducer


class Recorder:
    def __init__(self) -> None:
        self.events: list[Any] = []

    def body_chunk(self, data: bytes) -> None:
        self.events.append(("chunk", data))

    def body_complete(self) -> None:
        self.events.append(("complete",))


class RecordingRequest(StreamingRequestMixin):
    receiver = Recorder()

    def bodyStarted(self, length: int | None) -> Recorder:
        self.receiver.events.append(("started", self.method, self.uri, self.clientproto, length))
        return self.receiver


def channel() -> tuple[http.HTTPChannel, StringTransport, Recorder]:
    recorder = Recorder()
    RecordingRequest.receiver = recorder
    chan = http.HTTPChannel()
    chan.requestFactory = RecordingRequest
    transport = StringTransport()
    chan.makeConnection(transport)
    return chan, transport, recorder


def test_headers_reach_the_request_before_the_body() -> None:
    chan, _, recorder = channel()
    chan.dataReceived(b"POST /a/b?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\n\r\n")
    assert recorder.events == [("started", b"POST", b"/a/b?x=1", b"HTTP/1.1", 6)]
    chan.dataReceived(b"abc")
    chan.dataReceived(b"def")
    assert recorder.events[1:] == [("chunk", b"abc"), ("chunk", b"def"), ("complete",)]


def test_chunked_body_streams_chunk_by_chunk() -> None:
    chan, _, recorder = channel()
    chan.dataReceived(b"PUT /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert recorder.events == [("started", b"PUT", b"/x", b"HTTP/1.1", None)]
    chan.dataReceived(b"3\r\nabc\r\n")
    assert recorder.events[-1] == ("chunk", b"abc")
    chan.dataReceived(b"0\r\n\r\n")
    assert recorder.events[-1] == ("complete",)


def test_request_without_body_completes_at_once() -> None:
    chan, _, recorder = channel()
    chan.dataReceived(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert recorder.events == [("started", b"GET", b"/", b"HTTP/1.1", 0), ("complete",)]


def test_conflicting_lengths_are_rejected_before_the_request_starts() -> None:
    chan, transport, recorder = channel()
    chan.dataReceived(
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    assert transport.value().startswith(b"HTTP/1.1 400 Bad Request")
    assert recorder.events == []


# ---------------------------------------------------------------- the body producer


class Consumer:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data


class Client:
    def __init__(self) -> None:
        self.paused = False

    def pause(self) -> None:
        assert not self.paused
        self.paused = True

    def resume(self) -> None:
        assert self.paused
        self.paused = False


def test_producer_buffers_until_upstream_connects_then_pauses_the_client() -> None:
    client = Client()
    producer = RequestBodyProducer(None, client.pause, client.resume)
    assert producer.length is UNKNOWN_LENGTH
    producer.feed(b"a" * (PENDING_LIMIT - 1))
    assert not client.paused
    producer.feed(b"b")
    assert client.paused  # bounded: nothing more is read until upstream is there
    consumer = Consumer()
    done = producer.startProducing(consumer)
    assert consumer.data == b"a" * (PENDING_LIMIT - 1) + b"b"
    assert not client.paused
    producer.finish()
    assert done.called


def test_upstream_pause_pauses_the_client_and_reasserts_it() -> None:
    client = Client()
    producer = RequestBodyProducer(10, client.pause, client.resume)
    consumer = Consumer()
    done = producer.startProducing(consumer)
    producer.pauseProducing()
    assert client.paused
    client.paused = False  # HTTPChannel resumed the socket behind our back
    producer.feed(b"12345")
    assert client.paused and consumer.data == b"12345"
    producer.resumeProducing()
    assert not client.paused
    producer.feed(b"67890")
    producer.finish()
    assert consumer.data == b"1234567890" and done.called


def test_stopped_producer_drops_data_and_releases_the_client() -> None:
    client = Client()
    producer = RequestBodyProducer(None, client.pause, client.resume)
    producer.startProducing(Consumer())
    producer.pauseProducing()
    producer.stopProducing()
    assert not client.paused
    producer.feed(b"ignored")
    producer.finish()


def test_failure_reaches_the_agent() -> None:
    producer = RequestBodyProducer(None, lambda: None, lambda: None)
    done = producer.startProducing(Consumer())
    errors: list[Failure] = []
    done.addErrback(errors.append)
    producer.fail(Failure(ConnectionError("client went away")))
    assert errors and errors[0].check(ConnectionError)
