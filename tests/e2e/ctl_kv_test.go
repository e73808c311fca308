package e2e

import "testing"

func TestEtcdctlPutGetDel(t *testing.T) {
	ctlScenario(t, []step{
		s("put", "foo", "bar").expect("OK\n"),                         // 2
		s("put", "foo", "bar2", "--prev-kv").expect("OK\nfoo\nbar\n"), // 3
		s("put", "foo", "--ignore-value").expect("OK\n"),              // 4
		s("get", "foo").expect("foo\nbar2\n"),
		s("put", "missing", "--ignore-value"),
		s("put", "missing", "v", "--ignore-lease"),
		s("put", "foo", "v", "--ignore-value"),
		s("put", "foo", "baz", "--ignore-lease", "--prev-kv").expect("OK\nfoo\nbar2\n"), // 5
		s("put", "foo", "--ignore-value", "--ignore-lease").expect("OK\n"),              // 6
		s("put", "leased", "v", "--lease=1234"),
		s("put", "k/1", "e"),   // 7
		s("put", "k/2", "d"),   // 8
		s("put", "k/3", "c"),   // 9
		s("put", "k/4", "b"),   // 10
		s("put", "k/5", "a"),   // 11
		s("put", "k/2", "d"),   // 12
		s("put", "k/4", "b"),   // 13
		s("put", "k/4", "b"),   // 14
		s("put", "zz", "last"), // 15
		s("get", "foo", "-w", "json"),
		s("get", "foo", "-w", "fields"),
		s("get", "k/", "--prefix").expect("k/1\ne\nk/2\nd\nk/3\nc\nk/4\nb\nk/5\na\n"),
		s("get", "k/3", "--from-key").expect("k/3\nc\nk/4\nb\nk/5\na\nzz\nlast\n"),
		s("get", "", "--from-key"),
		s("get", "", "--prefix", "--keys-only"),
		s("get", "k/2", "k/4").expect("k/2\nd\nk/3\nc\n"),
		s("get", "k/", "--prefix", "--limit", "2").expect("k/1\ne\nk/2\nd\n"),
		s("get", "k/", "--prefix", "--limit", "2", "-w", "json"),
		s("get", "foo", "--rev", "2").expect("foo\nbar\n"),
		s("get", "foo", "--rev", "3", "-w", "json"),
		s("get", "foo", "--rev", "100"),
		s("get", "k/", "--prefix", "--order", "DESCEND").expect("k/5\na\nk/4\nb\nk/3\nc\nk/2\nd\nk/1\ne\n"),
		s("get", "k/", "--prefix", "--order", "ASCEND"),
		s("get", "k/", "--prefix", "--sort-by", "KEY"),
		s("get", "k/", "--prefix", "--sort-by", "KEY", "--order", "DESCEND"),
		s("get", "k/", "--prefix", "--sort-by", "CREATE", "--order", "DESCEND"),
		s("get", "k/", "--prefix", "--sort-by", "CREATE", "--order", "ASCEND"),
		s("get", "k/", "--prefix", "--sort-by", "MODIFY").expect("k/1\ne\nk/3\nc\nk/5\na\nk/2\nd\nk/4\nb\n"),
		s("get", "k/", "--prefix", "--sort-by", "MODIFY", "--order", "DESCEND"),
		s("get", "k/", "--prefix", "--sort-by", "VALUE").expect("k/5\na\nk/4\nb\nk/3\nc\nk/2\nd\nk/1\ne\n"),
		s("get", "k/", "--prefix", "--sort-by", "VALUE", "--order", "DESCEND"),
		s("get", "k/", "--prefix", "--sort-by", "VERSION", "--order", "DESCEND", "--keys-only"),
		s("get", "k/", "--prefix", "--sort-by", "VERSION", "--limit", "2"),
		s("get", "k/", "--prefix", "--order", "DESCEND", "--limit", "3", "-w", "json"),
		s("get", "k/", "--prefix", "--keys-only").expect("k/1\n\nk/2\n\nk/3\n\nk/4\n\nk/5\n\n"),
		s("get", "k/", "--prefix", "--count-only"),
		s("get", "k/", "--prefix", "--count-only", "-w", "fields"),
		s("get", "k/", "--prefix", "--print-value-only"),
		s("get", "foo", "--consistency", "l").expect("foo\nbaz\n"),
		s("get", "foo", "--consistency", "s").expect("foo\nbaz\n"),
		s("get", "k/", "--prefix", "--min-create-rev", "9").expect("k/3\nc\nk/4\nb\nk/5\na\n"),
		s("get", "k/", "--prefix", "--max-create-rev", "8").expect("k/1\ne\nk/2\nd\n"),
		s("get", "k/", "--prefix", "--min-mod-rev", "12").expect("k/2\nd\nk/4\nb\n"),
		s("get", "k/", "--prefix", "--max-mod-rev", "11").expect("k/1\ne\nk/3\nc\nk/5\na\n"),
		s("get", "k/", "--prefix", "--min-mod-rev", "10", "--max-mod-rev", "12", "--min-create-rev", "8", "-w", "json"),
		s("get", "k/", "--prefix", "--rev", "9", "-w", "json"),
		s("get", "nothing").expect(""),
		s("get", "nothing", "-w", "json"),
		s("del", "k/1").expect("1\n"),
		s("del", "k/1").expect("0\n"),
		s("del", "k/2", "--prev-kv").expect("1\nk/2\nd\n"),
		s("del", "k/3", "k/5", "--range", "--prev-kv").expect("2\nk/3\nc\nk/4\nb\n"),
		s("put", "k/6", "x"),
		s("del", "k/", "--prefix", "--prev-kv", "-w", "json"),
		s("put", "y", "1"),
		s("del", "y", "--from-key").expect("2\n"),
		s("del", "", "--prefix", "--prev-kv"),
		s("get", "", "--prefix").expect(""),
		s("del", "nothing", "-w", "json"),
		s("get", "k/", "--prefix", "--rev", "1000"),
	})
}

func TestEtcdctlTxn(t *testing.T) {
	ctlScenario(t, []step{
		s("put", "key1", "v1"), // 2
		s("put", "key1", "v1"), // 3
		s("put", "key2", "v2"), // 4
		s("txn", "--interactive=false").input(
			"value(\"key1\") = \"v1\"\n\nput key3 v3\nget key1\n\nput key4 v4\n\n").expect("SUCCESS\n\nOK\n\nkey1\nv1\n"),
		s("txn", "--interactive=false").input(
			"value(\"key1\") > \"v1\"\n\nput key3 v3\n\nput key4 v4\nget key2\n\n").expect("FAILURE\n\nOK\n\nkey2\nv2\n"),
		s("txn", "--interactive=false").input(
			"version(\"key1\") = \"2\"\nver(\"key2\") < \"2\"\n\ndel key4\n\n\n"),
		s("txn", "--interactive=false").input(
			"create(\"key1\") = \"2\"\nc(\"key2\") != \"2\"\n\nput created ok\n\nput created no\n\n"),
		s("txn", "--interactive=false").input(
			"mod(\"key1\") = \"3\"\nm(\"key3\") > \"4\"\n\nput mod ok\n\nput mod no\n\n"),
		s("txn", "--interactive=false").input(
			"mod(\"key1\") < \"3\"\n\nput mod ok\n\nput mod no\n\n"),
		s("txn", "--interactive=false").input(
			"lease(\"key1\") = \"0\"\n\nput lease ok\n\nput lease no\n\n"),
		s("txn", "--interactive=false").input(
			"lease(\"key1\") != \"0\"\n\nput lease ok\n\nput lease no\n\n"),
		s("txn", "--interactive=false").input(
			"version(\"missing\") = \"0\"\nval(\"missing\") = \"\"\n\nput missing yes\n\nput missing no\n\n"),
		s("txn", "--interactive=false", "-w", "json").input(
			"value(\"key1\") = \"v1\"\n\nget key1\nput key5 v5 --prev-kv\ndel key2 --prev-kv\n\n\n"),
		s("txn", "--interactive=false", "-w", "json").input(
			"value(\"key1\") = \"v1\"\n\nget key --prefix --limit 1\nput key5 v5 --prev-kv\n\n\n"),
		s("txn", "--interactive=false").input(
			"\nput a 1\nput a 2\n\n\n"),
		s("txn", "--interactive=false").input(
			"\nput --ignore-value nokey\n\n\n"),
		s("txn", "--interactive=false").input(
			"\n\n\n"),
		s("get", "", "--prefix", "-w", "json"),
	})
}

func TestEtcdctlCompaction(t *testing.T) {
	ctlScenario(t, []step{
		s("put", "a", "1"), // 2
		s("put", "a", "2"), // 3
		s("put", "a", "3"), // 4
		s("put", "b", "1"), // 5
		s("put", "a", "4"), // 6
		s("compaction", "3").expect("compacted revision 3\n"),
		s("get", "a", "--rev", "2"),
		s("get", "a", "--rev", "3").expect("a\n2\n"),
		s("compaction", "3"),
		s("compaction", "2", "--physical"),
		s("compaction", "100"),
		s("compaction", "5", "--physical").expect("compacted revision 5\n"),
		s("get", "a", "--rev", "4"),
		s("get", "", "--prefix", "--rev", "5").expect("a\n3\nb\n1\n"),
		s("get", "a", "-w", "json"),
		s("compaction", "6").expect("compacted revision 6\n"),
		s("put", "c", "1"),
		s("get", "", "--prefix", "-w", "json"),
	})
}

func TestEtcdctlCluster(t *testing.T) {
	ctlScenario(t, []step{
		s("put", "a", "1"),
		s("endpoint", "status").with(normStatusSimple),
		s("endpoint", "status", "-w", "json"),
		s("endpoint", "status", "-w", "table").with(normTable(statusVarCols...)),
		s("endpoint", "health").with(normHealth),
		// --cluster dials the client URLs that MemberList advertises
		s("endpoint", "health", "--cluster").with(normHealth),
		s("endpoint", "status", "--cluster").with(normStatusSimple),
		s("endpoint", "health", "-w", "json"),
		s("endpoint", "health", "-w", "table").with(normHealthTable),
		s("member", "list").with(normMemberSimple),
		s("member", "list", "-w", "json"),
		s("member", "list", "-w", "table").with(normTable(0, 3)),
		s("member", "list", "--consistency", "s").with(normMemberSimple),
		s("alarm", "list").expect(""),
	})
}
