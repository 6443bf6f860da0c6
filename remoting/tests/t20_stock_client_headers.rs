//! Proves the header decoders read what stock clients send, as RocketMQ's Java broker reads
//! it (issue 15: Apache's C++ client could not send a single message). Each request below
//! is the header JSON a client writes, taken field by field from that client's source:
//! the Java client 4.9.x (every value a string), Apache's rocketmq-client-cpp (`Encode()`
//! in `CommandHeader.cpp`: `int` fields as JSON numbers, ACL fields always present, keys
//! sorted, a trailing newline; older builds write booleans as `0`/`1`) and Apache's
//! rocketmq-client-go v2 (`internal/request.go`: every value a string, plus `bname`).

use remoting::header::*;
use remoting::route::{from_json, HeartbeatData};
use remoting::{CommandHeader, RemotingCommand, SerializeType};

const CPP_ACL: &str =
    r#""AccessKey":"","OnsChannel":"ALIYUN","Signature":"q1Vq6zJ9fZQ3m4vZl2Y8m7GJx0w=""#;

fn decode(header_json: &str) -> RemotingCommand {
    RemotingCommand::decode_header(SerializeType::Json, header_json.as_bytes())
        .unwrap_or_else(|e| panic!("{e}: {header_json}"))
}

fn cpp(code: i32, ext: &str) -> RemotingCommand {
    decode(&format!(
        "{{\"code\":{code},\"extFields\":{{{CPP_ACL},{ext}}},\"flag\":0,\"language\":\"CPP\",\"opaque\":7,\"remark\":\"\",\"version\":333}}\n"
    ))
}

fn go(code: i32, ext: &str) -> RemotingCommand {
    decode(&format!(
        "{{\"code\":{code},\"language\":\"GO\",\"version\":317,\"opaque\":9,\"flag\":0,\"remark\":\"\",\"extFields\":{{{ext}}}}}"
    ))
}

fn java(code: i32, ext: &str) -> RemotingCommand {
    decode(&format!(
        "{{\"code\":{code},\"extFields\":{{{ext}}},\"flag\":0,\"language\":\"JAVA\",\"opaque\":3,\"serializeTypeCurrentRPC\":\"JSON\",\"version\":399}}"
    ))
}

fn read<H: CommandHeader>(cmd: &RemotingCommand) -> H {
    cmd.header::<H>()
        .unwrap_or_else(|e| panic!("{e}: {:?}", cmd))
}

#[test]
fn cpp_send_v2_with_numbers_and_any_boolean_spelling() {
    for (k, m, unit_mode) in [
        (r#""false""#, r#""false""#, false),
        (r#""0""#, r#""0""#, false),
        (r#""1""#, r#""0""#, false), // Java's Boolean.parseBoolean("1") is false
        (r#""TRUE""#, r#""false""#, true),
    ] {
        let cmd = cpp(
            310,
            &format!(
                r#""a":"PG","b":"TopicTest","c":"TBW102","d":4,"e":2,"f":0,"g":"1700000000123","h":0,"i":"UNIQ_KEY\u0001C0A8000100002A9F00000000000000\u0002WAIT\u0001true\u0002","j":"0","k":{k},"l":16,"m":{m}"#
            ),
        );
        let h: SendMessageRequestHeader = read::<SendMessageRequestHeaderV2>(&cmd).into();
        assert_eq!(h.producer_group, "PG");
        assert_eq!(h.topic, "TopicTest");
        assert_eq!(h.default_topic_queue_nums, 4);
        assert_eq!(h.queue_id, 2);
        assert_eq!(h.born_timestamp, 1_700_000_000_123);
        assert_eq!(h.unit_mode, Some(unit_mode));
        assert_eq!(h.batch, Some(false));
        assert_eq!(h.max_reconsume_times, Some(16));
        assert!(h.properties.unwrap().contains("WAIT\u{1}true\u{2}"));
    }
}

#[test]
fn go_send_v1_and_batch_v2_with_bname() {
    let cmd = go(
        10,
        r#""producerGroup":"PG","topic":"TopicTest","queueId":"3","sysFlag":"0","bornTimestamp":"1700000000123","flag":"0","reconsumeTimes":"0","unitMode":"false","maxReconsumeTimes":"0","defaultTopic":"TBW102","defaultTopicQueueNums":"4","batch":"false","properties":"TAGS\u0001TagA\u0002","bname":"broker-a""#,
    );
    let h: SendMessageRequestHeader = read(&cmd);
    assert_eq!((h.queue_id, h.sys_flag, h.batch), (3, 0, Some(false)));
    assert_eq!(h.properties.as_deref(), Some("TAGS\u{1}TagA\u{2}"));
    let cmd = go(
        320,
        r#""a":"PG","b":"TopicTest","c":"TBW102","d":"4","e":"1","f":"0","g":"1700000000123","h":"0","i":"","j":"0","k":"false","l":"0","m":"true","n":"broker-a""#,
    );
    let h: SendMessageRequestHeader = read::<SendMessageRequestHeaderV2>(&cmd).into();
    assert_eq!(h.batch, Some(true));
    assert_eq!(h.properties.as_deref(), Some(""));
}

#[test]
fn java_send_v2_leaves_optional_fields_out() {
    let cmd = java(
        310,
        r#""a":"PG","b":"TopicTest","c":"TBW102","d":"4","e":"0","f":"0","g":"1700000000123","h":"0","i":"KEYS\u0001k1\u0002","j":"0","k":"false","m":"false""#,
    );
    let h: SendMessageRequestHeader = read::<SendMessageRequestHeaderV2>(&cmd).into();
    assert_eq!(h.max_reconsume_times, None);
    assert_eq!(h.unit_mode, Some(false));
}

#[test]
fn pulls_of_every_client() {
    let c = cpp(
        11,
        r#""commitOffset":"120","consumerGroup":"CG","maxMsgNums":32,"queueId":0,"queueOffset":"120","subVersion":"1700000000000","subscription":"*","suspendTimeoutMillis":"15000","sysFlag":7,"topic":"TopicTest""#,
    );
    let h: PullMessageRequestHeader = read(&c);
    assert_eq!((h.queue_id, h.max_msg_nums, h.sys_flag), (0, 32, 7));
    assert_eq!(h.expression_type, None);
    let g = go(
        11,
        r#""consumerGroup":"CG","topic":"TopicTest","queueId":"0","queueOffset":"120","maxMsgNums":"32","sysFlag":"3","commitOffset":"118","suspendTimeoutMillis":"20000","subscription":"","subVersion":"0","expressionType":"TAG","bname":"broker-a""#,
    );
    let h: PullMessageRequestHeader = read(&g);
    assert_eq!(h.subscription.as_deref(), Some(""));
    assert_eq!(h.commit_offset, 118);
    let j = java(
        11,
        r#""commitOffset":"0","consumerGroup":"CG","expressionType":"TAG","maxMsgNums":"32","queueId":"1","queueOffset":"0","subVersion":"1700000000000","subscription":"TagA || TagB","suspendTimeoutMillis":"15000","sysFlag":"6","topic":"TopicTest""#,
    );
    let h: PullMessageRequestHeader = read(&j);
    assert_eq!(h.subscription.as_deref(), Some("TagA || TagB"));
}

#[test]
fn offsets_of_every_client() {
    for cmd in [
        cpp(
            15,
            r#""commitOffset":"125","consumerGroup":"CG","queueId":3,"topic":"TopicTest""#,
        ),
        go(
            15,
            r#""consumerGroup":"CG","topic":"TopicTest","queueId":"3","commitOffset":"125","bname":"broker-a""#,
        ),
        java(
            15,
            r#""commitOffset":"125","consumerGroup":"CG","queueId":"3","topic":"TopicTest""#,
        ),
    ] {
        let h: UpdateConsumerOffsetRequestHeader = read(&cmd);
        assert_eq!((h.queue_id, h.commit_offset), (3, 125));
    }
    let h: QueryConsumerOffsetRequestHeader = read(&cpp(
        14,
        r#""consumerGroup":"CG","queueId":3,"topic":"TopicTest""#,
    ));
    assert_eq!(h.set_zero_if_not_found, None);
    for code in [30, 31] {
        let h: QueueOffsetRequestHeader = read(&cpp(code, r#""queueId":0,"topic":"TopicTest""#));
        assert_eq!(h.queue_id, 0);
        let h: QueueOffsetRequestHeader = read(&go(
            code,
            r#""topic":"TopicTest","queueId":"0","bname":"broker-a""#,
        ));
        assert_eq!(h.topic, "TopicTest");
    }
    let h: SearchOffsetRequestHeader = read(&cpp(
        29,
        r#""queueId":0,"timestamp":"1700000000000","topic":"T""#,
    ));
    assert_eq!(h.timestamp, 1_700_000_000_000);
}

#[test]
fn client_requests_of_every_client() {
    // C++ sends the group it does not mean as "".
    let h: UnregisterClientRequestHeader = read(&cpp(
        35,
        r#""clientID":"10.0.0.5@12345#DEFAULT","consumerGroup":"CG","producerGroup":"""#,
    ));
    assert_eq!(h.consumer_group.as_deref(), Some("CG"));
    let h: UnregisterClientRequestHeader = read(&java(
        35,
        r#""clientID":"10.0.0.5@12345#8765432101234","producerGroup":"PG""#,
    ));
    assert_eq!(h.consumer_group, None);
    let h: ConsumerGroupRequestHeader = read(&go(38, r#""consumerGroup":"CG""#));
    assert_eq!(h.consumer_group, "CG");
    let h: GetRouteInfoRequestHeader = read(&cpp(105, r#""topic":"TopicTest""#));
    assert_eq!(h.topic, "TopicTest");
}

#[test]
fn heartbeat_bodies_of_every_client() {
    let cpp = "{\"clientID\":\"10.0.0.5@12345#DEFAULT\",\"consumerDataSet\":[{\"consumeFromWhere\":0,\"consumeType\":1,\"groupName\":\"CG\",\"messageModel\":1,\"subscriptionDataSet\":[{\"codeSet\":[0,0],\"subString\":\"TagA || TagB\",\"subVersion\":\"1700000000000\",\"tagsSet\":[\"TagA\",\"TagB\"],\"topic\":\"TopicTest\"}]}]}\n";
    let go = r#"{"clientID":"10.0.0.5@12345","producerDataSet":[],"consumerDataSet":[{"groupName":"CG","consumeType":"CONSUME_PASSIVELY","messageModel":"CLUSTERING","consumeFromWhere":"CONSUME_FROM_LAST_OFFSET","subscriptionDataSet":[{"classFilterMode":false,"topic":"TopicTest","subString":"TagA","tagsSet":["TagA"],"codeSet":["2598919"],"subVersion":1700000000123456789,"expressionType":"TAG"}],"unitMode":false}]}"#;
    let java = r#"{"clientID":"10.0.0.5@12345#8765432101234","consumerDataSet":[{"consumeFromWhere":"CONSUME_FROM_FIRST_OFFSET","consumeType":"CONSUME_PASSIVELY","groupName":"CG","messageModel":"BROADCASTING","subscriptionDataSet":[{"classFilterMode":false,"codeSet":[],"expressionType":"TAG","subString":"*","subVersion":1700000000000,"tagsSet":[],"topic":"TopicTest"}],"unitMode":false}],"producerDataSet":[{"groupName":"PG"},{"groupName":"CLIENT_INNER_PRODUCER"}]}"#;
    for (body, model, from) in [
        (cpp, "CLUSTERING", "CONSUME_FROM_LAST_OFFSET"),
        (go, "CLUSTERING", "CONSUME_FROM_LAST_OFFSET"),
        (java, "BROADCASTING", "CONSUME_FROM_FIRST_OFFSET"),
    ] {
        let data: HeartbeatData =
            from_json("heartbeat", body.as_bytes()).unwrap_or_else(|e| panic!("{e}: {body}"));
        data.check_names().unwrap();
        let consumer = &data.consumer_data_set[0];
        assert_eq!(consumer.group_name, "CG");
        assert_eq!(consumer.consume_type, "CONSUME_PASSIVELY");
        assert_eq!(consumer.message_model, model);
        assert_eq!(consumer.consume_from_where, from);
        assert_eq!(consumer.subscription_data_set[0].topic, "TopicTest");
    }
    let data: HeartbeatData = from_json("heartbeat", go.as_bytes()).unwrap();
    let sub = &data.consumer_data_set[0].subscription_data_set[0];
    assert_eq!(sub.sub_version, 1_700_000_000_123_456_789);
    assert!(sub.code_set.contains(&2_598_919));
    let bad = r#"{"clientID":"x","consumerDataSet":[{"groupName":"C\u0000G"}]}"#;
    let data: HeartbeatData = from_json("heartbeat", bad.as_bytes()).unwrap();
    assert!(data.check_names().is_err());
}

#[test]
fn send_back_of_every_client() {
    for cmd in [
        cpp(
            36,
            r#""delayLevel":0,"group":"CG","maxReconsumeTimes":16,"offset":"4567","originMsgId":"C0A8000100002A9F00000000000011D7","originTopic":"TopicTest","unitMode":"false""#,
        ),
        go(
            36,
            r#""group":"CG","offset":"4567","delayLevel":"0","originMsgId":"C0A8000100002A9F00000000000011D7","originTopic":"TopicTest","unitMode":"false","maxReconsumeTimes":"16","bname":"broker-a""#,
        ),
        java(
            36,
            r#""delayLevel":"0","group":"CG","maxReconsumeTimes":"16","offset":"4567","originMsgId":"C0A8000100002A9F00000000000011D7","originTopic":"TopicTest","unitMode":"false""#,
        ),
    ] {
        let h: ConsumerSendMsgBackRequestHeader = read(&cmd);
        assert_eq!((h.offset, h.delay_level), (4567, 0));
        assert_eq!(h.max_reconsume_times, Some(16));
        assert_eq!(h.origin_topic.as_deref(), Some("TopicTest"));
    }
}
