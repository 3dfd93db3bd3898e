// Unit test: header bytes identical to the Python client library's for the same frames.
// The expected strings were produced by lineside.edge.protocol.encode_header; the pytest
// test_camera_bridge.py re-checks them against the library on every run.
#include <cstdio>
#include <cstring>
#include <string>

#include "frame_header.hpp"

using lineside::encode_header;
using lineside::FrameHeader;

static int failures = 0;

static void expect(const std::string& got, const std::string& want, const char* what) {
    if (got != want) {
        std::fprintf(stderr, "FAIL %s\n  got:  %s\n  want: %s\n", what, got.c_str(),
                     want.c_str());
        ++failures;
    }
}

int main(int argc, char** argv) {
    if (argc == 2 && std::strcmp(argv[1], "--print") == 0) {
        // Used by the Python cross-check: one header per line for fixed cases.
        FrameHeader a{"cam0", 42, 1764110000000000000ULL, "mono8", {256, 1600}, {}};
        FrameHeader b{"lane \"2\"\\\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 0, 0, "bgr8",
                      {8, 16, 3}, 12.5};
        FrameHeader c{"c", 18446744073709551615ULL, 1, "png", {1, 1}, 100.0};
        FrameHeader d{"tab\there", 7, 7, "jpeg", {2, 3}, 1e-07, "gige0-5f3a-1"};
        for (const auto& h : {a, b, c, d}) std::printf("%s\n", encode_header(h).c_str());
        return 0;
    }
    expect(encode_header({"cam0", 42, 1764110000000000000ULL, "mono8", {256, 1600}, {}}),
           "{\"schema\":1,\"camera_id\":\"cam0\",\"frame_id\":42,"
           "\"timestamp_ns\":1764110000000000000,\"encoding\":\"mono8\","
           "\"shape\":[256,1600]}",
           "plain mono8 header");
    expect(encode_header({"lane \"2\"\\\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 0, 0, "bgr8",
                          {8, 16, 3}, 12.5}),
           "{\"schema\":1,\"camera_id\":\"lane \\\"2\\\"\\\\\\u00e9\\u20ac\\ud83d\\ude00\","
           "\"frame_id\":0,\"timestamp_ns\":0,\"encoding\":\"bgr8\",\"shape\":[8,16,3],"
           "\"line_position\":12.5}",
           "escapes, non-ASCII and a line position");
    expect(encode_header({"c", 18446744073709551615ULL, 1, "png", {1, 1}, 100.0}),
           "{\"schema\":1,\"camera_id\":\"c\",\"frame_id\":18446744073709551615,"
           "\"timestamp_ns\":1,\"encoding\":\"png\",\"shape\":[1,1],\"line_position\":100.0}",
           "largest frame id and a whole-number position");
    expect(encode_header({"c", 3, 1, "mono8", {1, 1}, {}, "boot-2"}),
           "{\"schema\":1,\"camera_id\":\"c\",\"frame_id\":3,\"timestamp_ns\":1,"
           "\"encoding\":\"mono8\",\"shape\":[1,1],\"stream_id\":\"boot-2\"}",
           "a stream id");
    expect(lineside::encode_event("drop", "cam0", "incomplete buffer", {{"incomplete", 3}}),
           "{\"schema\":1,\"kind\":\"drop\",\"source\":\"camera-bridge\",\"camera_id\":\"cam0\","
           "\"reason\":\"incomplete buffer\",\"counters\":{\"incomplete\":3}}",
           "event body");
    if (failures) return 1;
    std::printf("frame_header_test: all passed\n");
    return 0;
}
