# mllm4rec build. `make` builds build/mllm4rec; `make test` runs every test (plain and
# under ASan+UBSan) and ends with "N passed, N failed"; `make demo` runs the pipeline.
# Every .c under src/ (except src/cli/) goes into the library; each tests/test_*.c is
# one test program; each bench/bench_*.c one benchmark program.

CC      ?= gcc
BUILD   ?= build
BLASDIR := /usr/lib/x86_64-linux-gnu/openblas-openmp
BLASINC := /usr/include/x86_64-linux-gnu/openblas-openmp
WARN    := -Wall -Wextra -Wno-unused-parameter $(if $(WERROR),-Werror)
CFLAGS  ?= -O2 -march=native -g
CPPFLAGS := -Iinclude -Isrc -I$(BLASINC) -I/usr/include/libpng16 -D_GNU_SOURCE
ALLCFLAGS = -std=c11 $(WARN) -fopenmp $(CFLAGS) $(CPPFLAGS)
LDLIBS  := -L$(BLASDIR) -Wl,-rpath,$(BLASDIR) -lopenblas -ljansson -lmicrohttpd -lpcre2-8 -lz -lcurl -lpng16 -ljpeg -lwebp -lyaml -lm
LDFLAGS := -fopenmp

# Open MPI (mllm4rec/dist.h): on by default; `make MPI=0` builds the same sources
# without it (src/dist/dist.c is then the one-process case). Only dist.c includes
# mpi.h; everything links libmpi. The stamp rebuilds dist.o when MPI changes.
MPI ?= 1
ifeq ($(MPI),1)
MPI_CFLAGS = $(shell pkg-config --cflags ompi-c) -DMR_HAVE_MPI=1
MPI_LIBS   = $(shell pkg-config --libs ompi-c)
endif
LDLIBS += $(MPI_LIBS)
MPI_STAMP := $(BUILD)/.mpi-$(MPI)

Q := $(if $(V),,@)   # make V=1 shows the full compiler lines

LIB_SRC   := $(shell find src -name '*.c' -not -path 'src/cli/*' | sort)
CLI_SRC   := $(sort $(wildcard src/cli/*.c))
TEST_SRC  := $(sort $(wildcard tests/test_*.c))
BENCH_SRC := $(sort $(wildcard bench/bench_*.c))
HEADERS   := $(shell find include src tests -name '*.h')

LIB_OBJ   := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
CLI_OBJ   := $(CLI_SRC:%.c=$(BUILD)/obj/%.o)
TEST_BIN  := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
BENCH_BIN := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)
DEPS_STAMP := $(BUILD)/.deps-installed

.PHONY: all test test-plain test-asan demo bench clean deps fuzz
all: $(BUILD)/mllm4rec

deps: $(DEPS_STAMP)
$(DEPS_STAMP): scripts/install-deps.sh
	@mkdir -p $(BUILD)
	bash scripts/install-deps.sh
	@touch $@

$(BUILD)/obj/%.o: %.c $(HEADERS) | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	@$(if $(V),,echo "  CC $<";)
	$(Q)$(CC) $(ALLCFLAGS) -c $< -o $@

$(MPI_STAMP): | $(DEPS_STAMP)
	@mkdir -p $(BUILD)
	@rm -f $(BUILD)/.mpi-*
	@touch $@

$(BUILD)/obj/src/dist/dist.o: src/dist/dist.c $(HEADERS) $(MPI_STAMP) | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	@$(if $(V),,echo "  CC $< (MPI=$(MPI))";)
	$(Q)$(CC) $(ALLCFLAGS) $(MPI_CFLAGS) -c $< -o $@

$(BUILD)/libmllm4rec.a: $(LIB_OBJ)
	@rm -f $@
	$(Q)ar rcs $@ $^

$(BUILD)/mllm4rec: $(CLI_OBJ) $(BUILD)/libmllm4rec.a
	@$(if $(V),,echo "  LD $@";)
	$(Q)$(CC) $(LDFLAGS) -o $@ $(CLI_OBJ) $(BUILD)/libmllm4rec.a $(LDLIBS)

# The test programs get src/base/file.c built with MR_IO_FAULTS (src/base/io_faults.h:
# the test itself makes the N-th write, fsync or rename fail). Linked ahead of the
# library, it defines every symbol of the library's file.o, which is then not pulled in;
# the library and the CLI never hold the hook.
$(BUILD)/testobj/file_faults.o: src/base/file.c $(HEADERS) | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	@$(if $(V),,echo "  CC $< (MR_IO_FAULTS)";)
	$(Q)$(CC) $(ALLCFLAGS) -DMR_IO_FAULTS -c $< -o $@

$(BUILD)/tests/%: tests/%.c tests/testlib.c $(HEADERS) $(BUILD)/libmllm4rec.a $(BUILD)/testobj/file_faults.o
	@mkdir -p $(dir $@)
	@$(if $(V),,echo "  LD $@";)
	$(Q)$(CC) $(ALLCFLAGS) $(LDFLAGS) -o $@ $< tests/testlib.c $(BUILD)/testobj/file_faults.o $(BUILD)/libmllm4rec.a $(LDLIBS)

$(BUILD)/bench/%: bench/%.c $(HEADERS) $(BUILD)/libmllm4rec.a
	@mkdir -p $(dir $@)
	@$(if $(V),,echo "  LD $@";)
	$(Q)$(CC) $(ALLCFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libmllm4rec.a $(LDLIBS)

# Each fuzz target's saved inputs (fuzz/corpus, fuzz/seeds, fuzz/regressions) replayed
# as a test program: the target built with gcc and tests/fuzz_replay.c's main.
FUZZ_SRC  := $(sort $(wildcard fuzz/fuzz_*.c))
FUZZ_NAMES := $(FUZZ_SRC:fuzz/fuzz_%.c=%)
REPLAY_BIN = $(FUZZ_NAMES:%=$(BUILD)/tests/test_fuzz_replay_%)
$(BUILD)/tests/test_fuzz_replay_%: fuzz/fuzz_%.c tests/fuzz_replay.c tests/testlib.c $(HEADERS) $(wildcard fuzz/*.h) \
    $(BUILD)/libmllm4rec.a $(BUILD)/testobj/file_faults.o
	@mkdir -p $(dir $@)
	@$(if $(V),,echo "  LD $@";)
	$(Q)$(CC) $(ALLCFLAGS) -Ifuzz -DFUZZ_TARGET='"fuzz_$*"' $(LDFLAGS) -o $@ tests/fuzz_replay.c $< tests/testlib.c \
	  $(BUILD)/testobj/file_faults.o $(BUILD)/libmllm4rec.a $(LDLIBS)

test-plain: $(BUILD)/mllm4rec $(TEST_BIN) $(REPLAY_BIN)
	@bash tests/run.sh $(BUILD) plain

# The same unit tests, rebuilt with AddressSanitizer and UndefinedBehaviorSanitizer.
test-asan:
	@$(MAKE) --no-print-directory BUILD=build/asan \
	  CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
	  LDFLAGS="-fopenmp -fsanitize=address,undefined" build/asan/mllm4rec $(TEST_SRC:tests/%.c=build/asan/tests/%) \
	  $(FUZZ_NAMES:%=build/asan/tests/test_fuzz_replay_%)
	@MLLM4REC_SANITIZER=1 ASAN_OPTIONS=detect_leaks=1 bash tests/run.sh build/asan asan

test: $(DEPS_STAMP)
	@rm -f build/test-results.txt
	@$(MAKE) --no-print-directory test-plain
	@$(MAKE) --no-print-directory test-asan
	@bash tests/summary.sh build/test-results.txt

bench: $(BUILD)/mllm4rec $(BENCH_BIN)
	@for b in $(BENCH_BIN); do echo "== $$b"; $$b || exit 1; done
	@echo "== bench/bench_serve.sh"; MLLM4REC_BIN=$(BUILD)/mllm4rec bash bench/bench_serve.sh

demo: $(BUILD)/mllm4rec
	@bash scripts/demo.sh

# Coverage-guided fuzzing of the parsers (clang's libFuzzer).
#   make fuzz FUZZ_SECONDS=60 [FUZZ_TARGETS="fuzz_prepare ..."]: each target starts from
#     its saved corpus fuzz/corpus/<target>/, its seeds fuzz/seeds/<target>/ (made by
#     fuzz/make_seeds.py where the inputs are binary) and its past findings
#     fuzz/regressions/<target>/, grows build/fuzz/corpus-<target>, uses
#     fuzz/<target>.dict when present, and logs to build/fuzz/<target>.log. A finding
#     stops make with the report; its input is copied to fuzz/regressions/<target>/, where
#     `make test` replays it until it is fixed (and ever after).
#   make fuzz-corpus: minimises (libFuzzer -merge=1) the saved corpus plus what the
#     campaigns grew into a new fuzz/corpus/<target>/ (commit it).
#   make fuzz-long: 20 minutes per target (FUZZ_LONG_SECONDS), then fuzz-corpus.
FUZZ_TARGETS ?= $(FUZZ_SRC:fuzz/%.c=%)
FUZZ_SECONDS ?= 30
FUZZ_LONG_SECONDS ?= 1200
FUZZ_CFLAGS := -std=c11 -O1 -g -fsanitize=fuzzer-no-link,address,undefined $(CPPFLAGS) -fopenmp
FUZZ_OBJ := $(LIB_SRC:%.c=build/fuzz/obj/%.o)
build/fuzz/obj/%.o: %.c $(HEADERS) | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(Q)clang $(FUZZ_CFLAGS) -c $< -o $@
build/fuzz/libmllm4rec-fuzz.a: $(FUZZ_OBJ)
	@rm -f $@
	$(Q)ar rcs $@ $^
build/fuzz/fuzz_%: fuzz/fuzz_%.c $(wildcard fuzz/*.h) build/fuzz/libmllm4rec-fuzz.a
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer -Ifuzz -o $@ $< build/fuzz/libmllm4rec-fuzz.a $(LDLIBS)
.PHONY: fuzz-corpus fuzz-long
fuzz: $(FUZZ_TARGETS:%=build/fuzz/%)
	@for n in $(FUZZ_TARGETS); do \
	  mkdir -p build/fuzz/corpus-$$n; \
	  dirs=; for k in corpus seeds regressions; do [ -d fuzz/$$k/$$n ] && dirs="$$dirs fuzz/$$k/$$n"; done; \
	  dict=; if [ -f fuzz/$$n.dict ]; then dict=-dict=fuzz/$$n.dict; fi; \
	  echo "== $$n ($(FUZZ_SECONDS)s)"; \
	  build/fuzz/$$n -max_total_time=$(FUZZ_SECONDS) -max_len=65536 -timeout=10 -rss_limit_mb=4096 \
	    -artifact_prefix=build/fuzz/$$n- $$dict build/fuzz/corpus-$$n $$dirs >build/fuzz/$$n.log 2>&1; rc=$$?; \
	  grep -E '^Done [0-9]+ runs' build/fuzz/$$n.log; grep -E '#[0-9]+.*(DONE|pulse|NEW).*cov:' build/fuzz/$$n.log | tail -1; \
	  if [ $$rc != 0 ]; then grep -E -A30 'ERROR|runtime error|deadly signal|out-of-memory|timeout' build/fuzz/$$n.log | head -60; \
	    mkdir -p fuzz/regressions/$$n; for a in build/fuzz/$$n-crash-* build/fuzz/$$n-leak-* build/fuzz/$$n-timeout-* build/fuzz/$$n-oom-*; do \
	      [ -f "$$a" ] && cp "$$a" fuzz/regressions/$$n/; done; \
	    echo "$$n: finding (exit $$rc), full log build/fuzz/$$n.log; input saved in fuzz/regressions/$$n/"; exit 1; fi; \
	done
fuzz-corpus: $(FUZZ_TARGETS:%=build/fuzz/%)
	@for n in $(FUZZ_TARGETS); do \
	  rm -rf build/fuzz/merged-$$n; mkdir -p build/fuzz/merged-$$n build/fuzz/corpus-$$n; \
	  dirs=; for k in corpus seeds regressions; do [ -d fuzz/$$k/$$n ] && dirs="$$dirs fuzz/$$k/$$n"; done; \
	  build/fuzz/$$n -merge=1 -max_len=65536 -timeout=10 build/fuzz/merged-$$n $$dirs build/fuzz/corpus-$$n \
	    >build/fuzz/$$n-merge.log 2>&1 || { tail -20 build/fuzz/$$n-merge.log; exit 1; }; \
	  rm -rf fuzz/corpus/$$n; mkdir -p fuzz/corpus; mv build/fuzz/merged-$$n fuzz/corpus/$$n; \
	  echo "$$n: $$(ls fuzz/corpus/$$n | wc -l) inputs in fuzz/corpus/$$n ($$(grep -Eo 'cov: [0-9]+' build/fuzz/$$n-merge.log | tail -1))"; \
	done
fuzz-long:
	@$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=$(FUZZ_LONG_SECONDS)
	@$(MAKE) --no-print-directory fuzz-corpus

clean:
	rm -rf build
