//! `FILE_DESCRIPTOR_SET` is a valid descriptor set describing the service.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use prost::Message;
use prost_types::FileDescriptorSet;
use tollgate_proto::FILE_DESCRIPTOR_SET;

#[test]
fn descriptor_set_decodes_and_describes_test_service() {
    let fds = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("decode");
    let names: Vec<&str> = fds.file.iter().map(|f| f.name()).collect();
    assert!(names.contains(&"google/protobuf/any.proto"), "{names:?}");
    assert!(names.contains(&"google/rpc/status.proto"), "{names:?}");

    let file = fds
        .file
        .iter()
        .find(|f| f.name() == "tollgate/test/v1/test.proto")
        .expect("test.proto");
    assert_eq!(file.package(), "tollgate.test.v1");
    let service = file
        .service
        .iter()
        .find(|s| s.name() == "TestService")
        .expect("TestService");
    let methods: Vec<(&str, bool, bool)> = service
        .method
        .iter()
        .map(|m| (m.name(), m.client_streaming(), m.server_streaming()))
        .collect();
    assert_eq!(
        methods,
        [
            ("Echo", false, false),
            ("ServerStream", false, true),
            ("ClientStream", true, false),
            ("BidiStream", true, true),
            ("Fail", false, false),
            ("Slow", false, false),
        ]
    );
}
