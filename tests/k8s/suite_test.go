package k8s

// The upstream generic storage suite (k8s.io/apiserver/pkg/storage/testing),
// wired as upstream's etcd3 store_test.go and watcher_test.go wire it, with
// metastore in place of the embedded etcd. Tests that need the store's
// private fields upstream get the same hooks from outside (a swappable
// transformer, recorders in the client); the few that need private types
// are listed in tests/README.md as not run.

import (
	"fmt"
	"testing"

	"k8s.io/apimachinery/pkg/api/apitesting"
	examplev1 "k8s.io/apiserver/pkg/apis/example/v1"
	"k8s.io/apiserver/pkg/features"
	storagetesting "k8s.io/apiserver/pkg/storage/testing"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	featuregatetesting "k8s.io/component-base/featuregate/testing"
)

func TestSuiteCreate(t *testing.T) {
	ctx, e := setup(t)
	storagetesting.RunTestCreate(ctx, t, e.store, e.checkStorageInvariants())
}

func TestSuiteCreateWithTTL(t *testing.T) {
	t.Parallel() // sleeps; sets no feature gate
	ctx, e := setup(t)
	storagetesting.RunTestCreateWithTTL(ctx, t, e.store)
}

func TestSuiteCreateWithKeyExist(t *testing.T) {
	ctx, e := setup(t)
	storagetesting.RunTestCreateWithKeyExist(ctx, t, e.store)
}

func TestSuiteGet(t *testing.T) {
	ctx, e := setup(t)
	storagetesting.RunTestGet(ctx, t, e.store)
}

func TestSuiteDelete(t *testing.T) {
	for name, run := range map[string]func(*testing.T, *env){
		"Unconditional":  func(t *testing.T, e *env) { storagetesting.RunTestUnconditionalDelete(t.Context(), t, e.store) },
		"Conditional":    func(t *testing.T, e *env) { storagetesting.RunTestConditionalDelete(t.Context(), t, e.store) },
		"WithSuggestion": func(t *testing.T, e *env) { storagetesting.RunTestDeleteWithSuggestion(t.Context(), t, e.store) },
		"WithSuggestionAndConflict": func(t *testing.T, e *env) {
			storagetesting.RunTestDeleteWithSuggestionAndConflict(t.Context(), t, e.store)
		},
		"WithSuggestionOfDeletedObject": func(t *testing.T, e *env) {
			storagetesting.RunTestDeleteWithSuggestionOfDeletedObject(t.Context(), t, e.store)
		},
		"ValidateDeletionWithSuggestion": func(t *testing.T, e *env) {
			storagetesting.RunTestValidateDeletionWithSuggestion(t.Context(), t, e.store)
		},
		"ValidateDeletionOnlySuggestion": func(t *testing.T, e *env) {
			storagetesting.RunTestValidateDeletionWithOnlySuggestionValid(t.Context(), t, e.store)
		},
		"WithConflict": func(t *testing.T, e *env) { storagetesting.RunTestDeleteWithConflict(t.Context(), t, e.store) },
		"PreconditionalWithSuggestion": func(t *testing.T, e *env) {
			storagetesting.RunTestPreconditionalDeleteWithSuggestion(t.Context(), t, e.store)
		},
		"PreconditionalWithSuggestionPass": func(t *testing.T, e *env) {
			storagetesting.RunTestPreconditionalDeleteWithOnlySuggestionPass(t.Context(), t, e.store)
		},
		"WithSuggestionAndMissingUndecoded": func(t *testing.T, e *env) {
			storagetesting.RunTestDeleteWithSuggestionAndMissingExpectedTransformOrDecodeError(t.Context(), t, e.store)
		},
	} {
		t.Run(name, func(t *testing.T) {
			featuregatetesting.SetFeatureGateDuringTest(t, utilfeature.DefaultFeatureGate, features.AllowUnsafeMalformedObjectDeletion, true)
			_, e := setup(t)
			run(t, e)
		})
	}
}

func TestSuiteDeleteUndecodable(t *testing.T) {
	featuregatetesting.SetFeatureGateDuringTest(t, utilfeature.DefaultFeatureGate, features.AllowUnsafeMalformedObjectDeletion, true)
	t.Run("ConflictAndMissingExpectedDecodeError", func(t *testing.T) {
		codec := &failingCodec{Codec: apitesting.TestCodec(codecs, examplev1.SchemeGroupVersion)}
		ctx, e := setup(t, withCodec(codec))
		storagetesting.RunTestDeleteWithConflictAndMissingExpectedTransformOrDecodeError(ctx, t, e.store, codec.setFailing)
	})
	t.Run("ExpectedTransformError", func(t *testing.T) {
		tr := &failingTransformer{Transformer: storagetesting.NewPrefixTransformer([]byte(valuePrefix), false)}
		ctx, e := setup(t, withTransformer(tr))
		storagetesting.RunTestDeleteExpectedTransformOrDecodeError(ctx, t, e.store, tr.setFailing)
	})
	t.Run("ExpectedDecodeError", func(t *testing.T) {
		codec := &failingCodec{Codec: apitesting.TestCodec(codecs, examplev1.SchemeGroupVersion)}
		ctx, e := setup(t, withCodec(codec))
		storagetesting.RunTestDeleteExpectedTransformOrDecodeError(ctx, t, e.store, codec.setFailing)
	})
}

func TestSuiteListPaging(t *testing.T) {
	ctx, e := setup(t)
	storagetesting.RunTestListPaging(ctx, t, e.store)
}

func TestSuiteGetListNonRecursive(t *testing.T) {
	ctx, e := setup(t)
	storagetesting.RunTestGetListNonRecursive(ctx, t, e.increaseRV(), e.store)
}

func TestSuiteGetListRecursivePrefix(t *testing.T) {
	ctx, e := setup(t)
	storagetesting.RunTestGetListRecursivePrefix(ctx, t, e.store)
}

func TestSuiteKeySchema(t *testing.T) {
	ctx, e := setup(t)
	storagetesting.RunTestKeySchema(ctx, t, e.store)
}

func TestSuiteGuaranteedUpdate(t *testing.T) {
	ctx, e := setup(t)
	storagetesting.RunTestGuaranteedUpdate(ctx, t, e.withPrefixTransformer(), e.checkStorageInvariants())
}

func TestSuiteGuaranteedUpdateWithTTL(t *testing.T) {
	t.Parallel() // sleeps; sets no feature gate
	ctx, e := setup(t)
	storagetesting.RunTestGuaranteedUpdateWithTTL(ctx, t, e.store)
}

func TestSuiteGuaranteedUpdateChecksStoredData(t *testing.T) {
	ctx, e := setup(t)
	storagetesting.RunTestGuaranteedUpdateChecksStoredData(ctx, t, e.withPrefixTransformer())
}

func TestSuiteGuaranteedUpdateWithConflict(t *testing.T) {
	ctx, e := setup(t)
	storagetesting.RunTestGuaranteedUpdateWithConflict(ctx, t, e.store)
}

func TestSuiteGuaranteedUpdateWithSuggestionAndConflict(t *testing.T) {
	ctx, e := setup(t)
	storagetesting.RunTestGuaranteedUpdateWithSuggestionAndConflict(ctx, t, e.store)
}

func TestSuiteTransformationFailure(t *testing.T) {
	ctx, e := setup(t)
	storagetesting.RunTestTransformationFailure(ctx, t, e.withPrefixTransformer())
}

func TestSuiteList(t *testing.T) {
	for _, rangeStream := range []bool{false, true} {
		t.Run(fmt.Sprintf("rangeStream=%v", rangeStream), func(t *testing.T) {
			ctx, e := setup(t)
			if rangeStream {
				requireRangeStream(t, e)
			} else {
				featuregatetesting.SetFeatureGateDuringTest(t, utilfeature.DefaultFeatureGate, features.EtcdRangeStream, false)
			}
			storagetesting.RunTestList(ctx, t, e.store, e.compaction(), false, e.lists)
			streams := e.kv.GetStreamReadsAndReset()
			if rangeStream && streams == 0 {
				t.Error("expected lists to be served by RangeStream")
			}
			if !rangeStream && streams > 0 {
				t.Errorf("expected no RangeStream requests with the feature disabled, got %d", streams)
			}
		})
	}
}

func TestSuiteConsistentList(t *testing.T) {
	for _, rangeStream := range []bool{false, true} {
		t.Run(fmt.Sprintf("rangeStream=%v", rangeStream), func(t *testing.T) {
			ctx, e := setup(t)
			if rangeStream {
				requireRangeStream(t, e)
			} else {
				featuregatetesting.SetFeatureGateDuringTest(t, utilfeature.DefaultFeatureGate, features.EtcdRangeStream, false)
			}
			storagetesting.RunTestConsistentList(ctx, t, e.store, e.increaseRV(), false, true, false)
		})
	}
}

func TestSuiteCompactRevision(t *testing.T) {
	// The store learns of compactions by watching compact_rev_key, which it
	// does with ListFromCacheSnapshot.
	featuregatetesting.SetFeatureGateDuringTest(t, utilfeature.DefaultFeatureGate, features.ListFromCacheSnapshot, true)
	ctx, e := setup(t)
	storagetesting.RunTestCompactRevision(ctx, t, e.store, e.increaseRV(), e.compaction())
}

func TestSuiteListContinuation(t *testing.T) {
	ctx, e := setup(t)
	storagetesting.RunTestListContinuation(ctx, t, e.store, e.checkCalls())
}

func TestSuiteListPaginationRareObject(t *testing.T) {
	// ListFromCacheSnapshot adds a read of compact_rev_key to the counts.
	featuregatetesting.SetFeatureGateDuringTest(t, utilfeature.DefaultFeatureGate, features.ListFromCacheSnapshot, false)
	ctx, e := setup(t)
	storagetesting.RunTestListPaginationRareObject(ctx, t, e.store, e.checkCalls())
}

func TestSuiteListContinuationWithFilter(t *testing.T) {
	ctx, e := setup(t)
	storagetesting.RunTestListContinuationWithFilter(ctx, t, e.store, e.checkCalls())
}

func TestSuiteNamespaceScopedList(t *testing.T) {
	ctx, e := setup(t)
	storagetesting.RunTestNamespaceScopedList(ctx, t, e.store)
}

func TestSuiteListInconsistentContinuation(t *testing.T) {
	t.Parallel() // sleeps; sets no feature gate
	ctx, e := setup(t)
	storagetesting.RunTestListInconsistentContinuation(ctx, t, e.store, e.compaction())
}

func TestSuiteListResourceVersionMatch(t *testing.T) {
	ctx, e := setup(t)
	storagetesting.RunTestListResourceVersionMatch(ctx, t, e.withPrefixTransformer())
}

func TestSuiteStats(t *testing.T) {
	for _, sizeEstimate := range []bool{true, false} {
		t.Run(fmt.Sprintf("SizeBasedListCostEstimate=%v", sizeEstimate), func(t *testing.T) {
			ctx, e := setup(t)
			if sizeEstimate {
				if err := e.store.EnableResourceSizeEstimation(e.keysFunc("/pods/")); err != nil {
					t.Fatal(err)
				}
			}
			storagetesting.RunTestStats(ctx, t, e.store, e.codec, e.transformer, sizeEstimate)
		})
	}
}

func TestSuiteWatch(t *testing.T) {
	plain := map[string]func(*testing.T, *env){
		"Watch":                func(t *testing.T, e *env) { storagetesting.RunTestWatch(t.Context(), t, e.store) },
		"ClusterScopedWatch":   func(t *testing.T, e *env) { storagetesting.RunTestClusterScopedWatch(t.Context(), t, e.store) },
		"NamespaceScopedWatch": func(t *testing.T, e *env) { storagetesting.RunTestNamespaceScopedWatch(t.Context(), t, e.store) },
		"DeleteTriggerWatch":   func(t *testing.T, e *env) { storagetesting.RunTestDeleteTriggerWatch(t.Context(), t, e.store) },
		"WatchFromZero": func(t *testing.T, e *env) {
			storagetesting.RunTestWatchFromZero(t.Context(), t, e.store, e.compaction())
		},
		"WatchFromNonZero":     func(t *testing.T, e *env) { storagetesting.RunTestWatchFromNonZero(t.Context(), t, e.store) },
		"DelayedWatchDelivery": func(t *testing.T, e *env) { storagetesting.RunTestDelayedWatchDelivery(t.Context(), t, e.store) },
		"WatchError": func(t *testing.T, e *env) {
			storagetesting.RunTestWatchError(t.Context(), t, e.withPrefixTransformer())
		},
		"WatchContextCancel": func(t *testing.T, e *env) { storagetesting.RunTestWatchContextCancel(t.Context(), t, e.store) },
		"WatcherTimeout":     func(t *testing.T, e *env) { storagetesting.RunTestWatcherTimeout(t.Context(), t, e.store) },
		"WatchDeleteEventObjectHaveLatestRV": func(t *testing.T, e *env) {
			storagetesting.RunTestWatchDeleteEventObjectHaveLatestRV(t.Context(), t, e.store)
		},
		"WatchInitializationSignal": func(t *testing.T, e *env) { storagetesting.RunTestWatchInitializationSignal(t.Context(), t, e.store) },
		"SendInitialEventsBackwardCompat": func(t *testing.T, e *env) {
			storagetesting.RunSendInitialEventsBackwardCompatibility(t.Context(), t, e.store)
		},
		"WatchErrorIsBlockingFurtherEvents": func(t *testing.T, e *env) {
			storagetesting.RunWatchErrorIsBlockingFurtherEvents(t.Context(), t, e.withPrefixTransformer())
		},
	}
	// These set no feature gate, and most of them wait: run them together.
	for name, run := range plain {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, e := setup(t)
			run(t, e)
		})
	}
	// Progress notifications every second, as upstream configures its etcd.
	t.Run("ProgressNotify", func(t *testing.T) {
		t.Parallel()
		ctx, e := setup(t, withServerArgs("--watch-progress-notify-interval", "1s"))
		storagetesting.RunOptionalTestProgressNotify(ctx, t, e.store, e.increaseRV())
	})
	t.Run("WatchDispatchBookmarkEvents", func(t *testing.T) {
		t.Parallel()
		ctx, e := setup(t, withServerArgs("--watch-progress-notify-interval", "1s"))
		storagetesting.RunTestWatchDispatchBookmarkEvents(ctx, t, e.store, false)
	})
	for _, rangeStream := range []bool{false, true} {
		t.Run(fmt.Sprintf("RangeStream=%v", rangeStream), func(t *testing.T) {
			semantics := map[string]func(*testing.T, *env){
				"WatchSemantics": func(t *testing.T, e *env) { storagetesting.RunWatchSemantics(t.Context(), t, e.store) },
				"WatchSemanticInitialEventsExtended": func(t *testing.T, e *env) {
					storagetesting.RunWatchSemanticInitialEventsExtended(t.Context(), t, e.store)
				},
				"WatchListMatchSingle": func(t *testing.T, e *env) { storagetesting.RunWatchListMatchSingle(t.Context(), t, e.store) },
				"WatchSemanticsWithConcurrentDecode": func(t *testing.T, e *env) {
					featuregatetesting.SetFeatureGateDuringTest(t, utilfeature.DefaultFeatureGate, features.ConcurrentWatchObjectDecode, true)
					storagetesting.RunWatchSemantics(t.Context(), t, e.store)
				},
			}
			for name, run := range semantics {
				t.Run(name, func(t *testing.T) {
					_, e := setup(t)
					if rangeStream {
						requireRangeStream(t, e)
					} else {
						featuregatetesting.SetFeatureGateDuringTest(t, utilfeature.DefaultFeatureGate, features.EtcdRangeStream, false)
					}
					run(t, e)
				})
			}
		})
	}
}
