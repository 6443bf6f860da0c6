//! The SQL92 table: expressions against messages with properties, each answer the one
//! RocketMQ 4.9.8 gives. Cases marked `ExpressionTest`/`ParserTest` are taken from
//! RocketMQ's `filter/src/test/java/.../ExpressionTest.java` and `ParserTest.java` (string
//! property values only: on the broker every property is a string); the others follow
//! the code named beside them (`ComparisonExpression.__compare`, `createBetween`, ...).

use std::collections::BTreeMap;

use super::*;

/// What RocketMQ's `Expression.evaluate` gives, or that `SelectorParser.parse` fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum R {
    /// TRUE: the message matches.
    T,
    /// FALSE.
    F,
    /// NULL (unknown): no match.
    N,
    /// evaluate throws: no match.
    E,
    /// parse fails (SUBSCRIPTION_PARSE_FAILED).
    P,
}
use R::*;

/// (expression, message properties, RocketMQ's answer).
type Case = (&'static str, &'static [(&'static str, &'static str)], R);

#[rustfmt::skip]
const CASES: &[Case] = &[
    // ExpressionTest: and / or over string values.
    ("a=3 and b<>4 And c>5 AND d<=4", &[("a", "3"), ("b", "5"), ("c", "6"), ("d", "1")], T),
    ("a=3 and b<>4 And c>5 AND d<=4", &[("a", "4"), ("b", "5"), ("c", "6"), ("d", "1")], F),
    ("a=3 or b<>4 Or c>5 OR d<=4", &[("a", "3")], T),
    ("a=3 or b<>4 Or c>5 OR d<=4", &[("a", "4"), ("b", "5")], T),
    ("a=3 or b<>4 Or c>5 OR d<=4", &[("a", "4"), ("b", "4"), ("c", "6")], T),
    ("a=3 or b<>4 Or c>5 OR d<=4", &[("a", "4"), ("b", "4"), ("c", "3"), ("d", "2")], T),
    ("a=3 or b<>4 Or c>5 OR d<=4", &[("a", "4"), ("b", "4"), ("c", "3"), ("d", "10")], F),
    // ExpressionTest: IN / NOT IN.
    ("a in ('3', '4', '5')", &[("a", "3")], T),
    ("a in ('3', '4', '5')", &[("a", "5")], T),
    ("a in ('3', '4', '5')", &[("a", "8")], F),
    ("a not in ('3', '4', '5')", &[("a", "8")], T),
    ("a not in ('3', '4', '5')", &[("a", "4")], F),
    // UnaryExpression.createInExpression: a missing property is NULL, for IN and NOT IN.
    ("a in ('3')", &[], N),
    ("a not in ('3')", &[], N),
    ("a IN ('x','y','z','w','v','u')", &[("a", "u")], T),
    // ExpressionTest: BETWEEN / NOT BETWEEN (bounds inclusive).
    ("a between 2 and 10", &[("a", "2")], T),
    ("a between 2 and 10", &[("a", "10")], T),
    ("a between 2 and 10", &[("a", "3")], T),
    ("a between 2 and 10", &[("a", "1")], F),
    ("a between 2 and 10", &[("a", "11")], F),
    ("a not between 2 and 10", &[("a", "1")], T),
    ("a not between 2 and 10", &[("a", "11")], T),
    ("a not between 2 and 10", &[("a", "2")], F),
    ("a not between 2 and 10", &[("a", "10")], F),
    ("a between 2 and 10", &[], N),
    ("a not between 2 and 10", &[], N),
    // ExpressionTest: IS [NOT] NULL.
    ("a is null", &[("abc", "2")], T),
    ("a is null", &[("a", "2")], F),
    ("a is not null", &[("a", "2")], T),
    ("a is not null", &[("abc", "2")], F),
    ("a IS NULL", &[("a", "")], F),
    // ExpressionTest: strings, boolean, null with OR.
    ("a is not null and a='hello'", &[("a", "hello")], T),
    ("a is not null and a='hello'", &[], F),
    ("a=TRUE OR b=FALSE", &[("a", "true"), ("b", "false")], T),
    ("a=TRUE OR b=FALSE", &[("a", "false"), ("b", "true")], F),
    ("a is null OR a='hello'", &[], T),
    ("a is null OR a='hello'", &[("a", "hello")], T),
    ("a is null OR a='hello'", &[("a", "abc")], F),
    ("TAGS is not null and TAGS='''''tag'''''", &[("TAGS", "''tag''")], T),
    // ExpressionTest: two string properties compared by > parse both as doubles.
    ("a > b", &[("a", "10"), ("b", "20")], F),
    ("a > b", &[("a", "20"), ("b", "10")], T),
    ("a > b", &[("a", "9"), ("b", "10")], F),
    ("a > 3.1E10", &[("a", "3.1415E10")], T),
    ("a > 3.14", &[("a", "3.1415")], T),
    ("a=b", &[("a", "3.14"), ("b", "3.14")], T),
    ("a<>b", &[("a", "3.14"), ("b", "3.14")], F),
    ("a<>b", &[("a", "3.14"), ("b", "3.141")], T),
    // ExpressionTest (stringCompare, expects the throw): non-numbers in > or BETWEEN.
    ("a between up and low", &[("a", "3.14"), ("up", "up"), ("low", "low")], E),
    ("key is not null and key between 0 and 100", &[("key", "con")], E),
    ("a between 0 and 100", &[("a", "abc")], E),
    ("a > b", &[("a", "x"), ("b", "1")], E),
    // __compare: a string property against an int literal is Integer.valueOf'd.
    ("a = 10", &[("a", "10")], T),
    ("a = 10", &[("a", "+10")], T),
    ("a = 10", &[("a", "010")], T),
    ("a = 10", &[("a", "10.0")], E),
    ("a = 10", &[("a", " 10")], E),
    ("a = 10", &[("a", "abc")], E),
    ("a > 10", &[("a", "10.5")], E),
    ("a > 2147483647", &[("a", "2147483648")], E),
    // ... against a long literal, Long.valueOf.
    ("a > 2147483648", &[("a", "2147483649")], T),
    ("a = 9223372036854775807", &[("a", "9223372036854775807")], T),
    ("a = 3000000000L", &[("a", "3000000000")], T),
    // ... against a double literal, Double.valueOf (whitespace trimmed, suffix allowed).
    ("a > 10.0", &[("a", "10.5")], T),
    ("a > 10.0", &[("a", "11")], T),
    ("a = 10.0", &[("a", "10")], T),
    ("a = 10.0", &[("a", " 10.0d ")], T),
    ("a < 1.5", &[("a", "NaN")], F),
    ("a > 1.5", &[("a", "NaN")], T),
    ("a > 1.5", &[("a", "Infinity")], T),
    ("a > 1.5", &[("a", "inf")], E),
    // An error anywhere evaluated fails the whole expression, even under OR.
    ("a = 10 OR b = 'x'", &[("a", "abc"), ("b", "x")], E),
    // ... but OR stops at the first TRUE, and AND at the first FALSE, so a later
    // term is not evaluated.
    ("b = 'x' OR a = 10", &[("a", "abc"), ("b", "x")], T),
    ("b = 'y' AND a = 10", &[("a", "abc"), ("b", "x")], F),
    // Negative numbers are negated literals.
    ("a > -5", &[("a", "-4")], T),
    ("a < -5", &[("a", "-4")], F),
    ("a between -10 and -1", &[("a", "-3")], T),
    ("a > -1.5", &[("a", "-1.25")], T),
    ("a > +5", &[("a", "6")], T),
    ("-a > 5", &[("a", "6")], N),
    // Three-valued logic: NULL for a missing property.
    ("a > 5", &[], N),
    ("a = 'x'", &[], N),
    ("'x' = a", &[], F),
    ("a <> 'x'", &[], N),
    ("NOT (a > 5)", &[], N),
    ("NOT (a > 5)", &[("a", "4")], T),
    ("a > 5 OR b = 'x'", &[("b", "x")], T),
    ("a > 5 OR b = 'x'", &[("b", "y")], N),
    ("a > 5 AND b = 'x'", &[("b", "y")], F),
    ("a > 5 AND b = 'x'", &[("b", "x")], N),
    ("a = b", &[], T),
    ("a = b", &[("a", "1")], F),
    // String equality is exact, case-sensitive, byte for byte.
    ("a = 'Hello'", &[("a", "hello")], F),
    ("a = ''", &[("a", "")], T),
    ("a = 'it''s'", &[("a", "it's")], T),
    ("a = 'é'", &[("a", "é")], T),
    ("a <> 'x'", &[("a", "y")], T),
    // Property names are case-sensitive; keywords are not.
    ("A = '1'", &[("a", "1")], N),
    ("a = '1' aNd b Is NoT nUlL", &[("a", "1"), ("b", "2")], T),
    ("TAGS = 'TagA'", &[("TAGS", "TagA")], T),
    ("TAGS in ('TagA', 'TagB') AND price > 100", &[("TAGS", "TagB"), ("price", "150")], T),
    ("TAGS in ('TagA', 'TagB') AND price > 100", &[("TAGS", "TagC"), ("price", "150")], F),
    ("$x_1 = '1'", &[("$x_1", "1")], T),
    // Boolean literals and properties as booleans (a property is a string, so its cast
    // is FALSE; missing is NULL).
    ("TRUE", &[], T),
    ("FALSE", &[], F),
    ("NULL", &[], N),
    ("NOT FALSE", &[], T),
    ("a", &[("a", "true")], F),
    ("a", &[], N),
    ("NOT a", &[("a", "true")], T),
    ("a = TRUE", &[("a", "TRUE")], T),
    ("a = TRUE", &[("a", "yes")], F),
    ("a = FALSE", &[("a", "yes")], T),
    ("(a > 1) = TRUE", &[("a", "2")], T),
    ("(a > 1) = 'x'", &[("a", "2")], E),
    // NOT binds tighter than comparisons: `NOT a = 'x'` is `(NOT a) = 'x'`, Boolean vs
    // String, which RocketMQ's __compare fails on (ClassCastException).
    ("NOT a = 'x'", &[("a", "x")], E),
    // Literals against literals.
    ("1 = 1", &[], T),
    ("1 = 1.0", &[], T),
    ("1 = 1L", &[], T),
    ("2 > 1", &[], T),
    ("'a' = 'a'", &[], T),
    ("'a' = 1", &[], E),
    ("1 = TRUE", &[], F),
    ("2147483648 > 2147483647", &[], T),
    // Comments and white space.
    ("a = 1 /* c */ AND b = 2", &[("a", "1"), ("b", "2")], T),
    ("a = 1 -- comment\n AND b = 2", &[("a", "1"), ("b", "2")], T),
    ("\ta\n=\r1\x0c", &[("a", "1")], T),
    // Parsing stops at the first token that cannot continue; the rest is ignored.
    ("a = 1 b = 2", &[("a", "1")], T),
    ("a = 1)", &[("a", "1")], T),
    // `--` without a new line is two minus signs, which end the expression here.
    ("a = 1 -- no new line", &[("a", "1")], T),
    // So `LIKE` (not in RocketMQ's grammar) leaves just `a`, a string cast to boolean.
    ("a LIKE 'x%'", &[("a", "xyz")], F),
    // RocketMQ 5's CONTAINS / STARTSWITH / ENDSWITH (a missing property is FALSE).
    ("a CONTAINS 'ell'", &[("a", "hello")], T),
    ("a NOT CONTAINS 'ell'", &[("a", "hello")], F),
    ("a CONTAINS 'x'", &[], F),
    ("a NOT CONTAINS 'x'", &[], F),
    ("a STARTSWITH 'he'", &[("a", "hello")], T),
    ("a ENDSWITH 'lo'", &[("a", "hello")], T),
    ("a not endswith 'lo'", &[("a", "hello")], F),
    ("a CONTAINS ''", &[("a", "hello")], F),
    // Parse failures (ParserTest and the create* checks).
    ("a and between 2 and 10", &[], P),
    (" a between 10 and 0", &[], P),
    ("a > 100000000000000000000000", &[], P),
    ("a between NULL and 1", &[], P),
    ("a between 'x' and 1", &[], P),
    ("a between 'a' and 'b'", &[], P),
    ("a = NULL", &[], P),
    ("NULL = a", &[], P),
    ("TRUE = 1", &[], P),
    ("a > 'abc'", &[], P),
    ("a > TRUE", &[], P),
    ("a > 1 > 2", &[], P),
    ("NOT a > 1", &[], P),
    ("'x' in ('x')", &[], P),
    ("a in (1, 2)", &[], P),
    ("a in ()", &[], P),
    ("a = 0.0", &[], P),
    ("a > 1e400", &[], P),
    ("1", &[], P),
    ("'x'", &[], P),
    ("-a", &[], P),
    ("", &[], P),
    ("a =", &[], P),
    ("(a = 1", &[], P),
    ("a = 'open", &[], P),
    ("a = 1 /* open", &[], P),
    ("a.b = 1", &[], P),
    ("a != 1", &[], P),
    ("a == 1", &[], P),
    ("a = 1 NOT b", &[], P),
    ("a IS 1", &[], P),
    ("a = 1 #", &[("a", "1")], P),
    ("007 = a", &[], P),
    ("0L = a", &[], P),
    // ParserTest: `now` is just a property name in 4.9.8.
    ("a <= now", &[("a", "1"), ("now", "2")], T),
];

fn run(expression: &str, props: &[(&str, &str)]) -> R {
    let map: BTreeMap<&str, &str> = props.iter().copied().collect();
    let filter = match Sql92Filter::parse(expression) {
        Ok(f) => f,
        Err(_) => return P,
    };
    let result = filter.evaluate(&map);
    let r = match result {
        Ok(Value::Bool(true)) => T,
        Ok(Value::Bool(false)) => F,
        Ok(Value::Null) => N,
        Ok(other) => panic!("{expression}: not a boolean: {other:?}"),
        Err(_) => E,
    };
    assert_eq!(
        filter.matches(&map),
        r == T,
        "{expression}: matches() agrees"
    );
    r
}

/// Proves each expression of the table gives RocketMQ 4.9.8's answer.
#[test]
fn table_matches_rocketmq() {
    let mut failures = Vec::new();
    for (expression, props, want) in CASES {
        let got = run(expression, props);
        if got != *want {
            failures.push(format!(
                "{expression:?} {props:?}: want {want:?}, got {got:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Proves the ignored tail is reported (the broker logs it) and a full parse has none.
#[test]
fn ignored_tail_is_reported() {
    assert!(Sql92Filter::parse("a LIKE 'x%'")
        .unwrap()
        .ignored_tail()
        .is_some());
    assert!(Sql92Filter::parse("a = 1 b")
        .unwrap()
        .ignored_tail()
        .is_some());
    assert!(Sql92Filter::parse("a = 1 -- c\n")
        .unwrap()
        .ignored_tail()
        .is_none());
}

/// Proves the same filter reads a stored record's properties string.
#[test]
fn reads_a_record_properties_string() {
    let props = crate::message::encode_properties([("TAGS", "TagA"), ("price", "150")]);
    let f = Sql92Filter::parse("TAGS = 'TagA' AND price BETWEEN 100 AND 200").unwrap();
    assert!(f.matches(&PropertiesString(&props)));
    let f = Sql92Filter::parse("price < 100").unwrap();
    assert!(!f.matches(&PropertiesString(&props)));
}

/// Proves hostile expressions are refused quickly instead of exhausting the stack:
/// deep parentheses, long chains of unary operators or of `IS NULL`, and oversize text;
/// and that a long flat OR chain within the size limit is fine.
#[test]
fn hostile_expressions_are_bounded() {
    let deep = format!("{}a = 1{}", "(".repeat(100_000), ")".repeat(100_000));
    assert!(Sql92Filter::parse(&deep).is_err());
    let deep = format!("{}a = 1{}", "(".repeat(5_000), ")".repeat(5_000));
    assert!(Sql92Filter::parse(&deep)
        .unwrap_err()
        .message
        .contains("nests deeper"));
    let nots = format!("{}TRUE", "NOT ".repeat(3_000));
    assert!(Sql92Filter::parse(&nots).is_err());
    let minus = format!("a > {}1", "- ".repeat(3_000));
    assert!(Sql92Filter::parse(&minus).is_err());
    let chain = format!("a{}", " IS NULL".repeat(1_000));
    assert!(Sql92Filter::parse(&chain).is_err());
    let eqs = format!("a = 1{}", " = TRUE".repeat(1_000));
    assert!(Sql92Filter::parse(&eqs).is_err());
    let big = format!("a IN ({})", vec!["'x'"; 10_000].join(","));
    assert!(Sql92Filter::parse(&big)
        .unwrap_err()
        .message
        .contains("bytes long"));

    let ors = vec!["a = '1'"; 1_200].join(" OR ");
    assert!(ors.len() < MAX_EXPRESSION_BYTES);
    let f = Sql92Filter::parse(&ors).unwrap();
    let map: BTreeMap<&str, &str> = [("a", "1")].into_iter().collect();
    assert!(f.matches(&map));
    let nested = format!("{}a = 1{}", "(".repeat(20), ")".repeat(20));
    assert!(Sql92Filter::parse(&nested).is_ok());
}
