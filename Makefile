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
LDLIBS  := -L$(BLASDIR) -Wl,-rpath,$(BLASDIR) -lopenblas -ljansson -lpcre2-8 -lz -lcurl -lpng16 -ljpeg -lwebp -lyaml -lm
LDFLAGS := -fopenmp

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

$(BUILD)/libmllm4rec.a: $(LIB_OBJ)
	@rm -f $@
	$(Q)ar rcs $@ $^

$(BUILD)/mllm4rec: $(CLI_OBJ) $(BUILD)/libmllm4rec.a
	@$(if $(V),,echo "  LD $@";)
	$(Q)$(CC) $(LDFLAGS) -o $@ $(CLI_OBJ) $(BUILD)/libmllm4rec.a $(LDLIBS)

$(BUILD)/tests/%: tests/%.c tests/testlib.c $(HEADERS) $(BUILD)/libmllm4rec.a
	@mkdir -p $(dir $@)
	@$(if $(V),,echo "  LD $@";)
	$(Q)$(CC) $(ALLCFLAGS) $(LDFLAGS) -o $@ $< tests/testlib.c $(BUILD)/libmllm4rec.a $(LDLIBS)

$(BUILD)/bench/%: bench/%.c $(HEADERS) $(BUILD)/libmllm4rec.a
	@mkdir -p $(dir $@)
	@$(if $(V),,echo "  LD $@";)
	$(Q)$(CC) $(ALLCFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libmllm4rec.a $(LDLIBS)

test-plain: $(BUILD)/mllm4rec $(TEST_BIN)
	@bash tests/run.sh $(BUILD) plain

# The same unit tests, rebuilt with AddressSanitizer and UndefinedBehaviorSanitizer.
test-asan:
	@$(MAKE) --no-print-directory BUILD=build/asan \
	  CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
	  LDFLAGS="-fopenmp -fsanitize=address,undefined" build/asan/mllm4rec $(TEST_SRC:tests/%.c=build/asan/tests/%)
	@MLLM4REC_SANITIZER=1 ASAN_OPTIONS=detect_leaks=1 bash tests/run.sh build/asan asan

test: $(DEPS_STAMP)
	@rm -f build/test-results.txt
	@$(MAKE) --no-print-directory test-plain
	@$(MAKE) --no-print-directory test-asan
	@bash tests/summary.sh build/test-results.txt

bench: $(BUILD)/mllm4rec $(BENCH_BIN)
	@for b in $(BENCH_BIN); do echo "== $$b"; $$b || exit 1; done

demo: $(BUILD)/mllm4rec
	@bash scripts/demo.sh

# Coverage-guided fuzzing of the parsers (clang's libFuzzer): make fuzz FUZZ_SECONDS=60
# [FUZZ_TARGETS="fuzz_prepare ..."]. Each target starts from its seeds in fuzz/seeds/<target>/
# and the corpus it grew before (build/fuzz/corpus-<target>), uses fuzz/<target>.dict when
# present; its log is build/fuzz/<target>.log, a failing input build/fuzz/<target>-crash-*,
# and a finding stops make with the report.
FUZZ_SRC := $(sort $(wildcard fuzz/fuzz_*.c))
FUZZ_TARGETS ?= $(FUZZ_SRC:fuzz/%.c=%)
FUZZ_SECONDS ?= 30
FUZZ_CFLAGS := -std=c11 -O1 -g -fsanitize=fuzzer-no-link,address,undefined $(CPPFLAGS) -fopenmp
FUZZ_OBJ := $(LIB_SRC:%.c=build/fuzz/obj/%.o)
build/fuzz/obj/%.o: %.c $(HEADERS) | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(Q)clang $(FUZZ_CFLAGS) -c $< -o $@
build/fuzz/libmllm4rec-fuzz.a: $(FUZZ_OBJ)
	@rm -f $@
	$(Q)ar rcs $@ $^
build/fuzz/fuzz_%: fuzz/fuzz_%.c fuzz/fuzz_util.h build/fuzz/libmllm4rec-fuzz.a
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer -Ifuzz -o $@ $< build/fuzz/libmllm4rec-fuzz.a $(LDLIBS)
fuzz: $(FUZZ_TARGETS:%=build/fuzz/%)
	@for n in $(FUZZ_TARGETS); do \
	  mkdir -p build/fuzz/corpus-$$n; \
	  seeds=; if [ -d fuzz/seeds/$$n ]; then seeds=fuzz/seeds/$$n; fi; \
	  dict=; if [ -f fuzz/$$n.dict ]; then dict=-dict=fuzz/$$n.dict; fi; \
	  echo "== $$n ($(FUZZ_SECONDS)s)"; \
	  build/fuzz/$$n -max_total_time=$(FUZZ_SECONDS) -max_len=65536 -artifact_prefix=build/fuzz/$$n- $$dict build/fuzz/corpus-$$n $$seeds \
	    >build/fuzz/$$n.log 2>&1; rc=$$?; \
	  grep -E '^Done [0-9]+ runs' build/fuzz/$$n.log; \
	  if [ $$rc != 0 ]; then grep -E -A30 'ERROR|runtime error|deadly signal|out-of-memory|timeout' build/fuzz/$$n.log | head -60; \
	    echo "$$n: finding (exit $$rc), full log build/fuzz/$$n.log"; exit 1; fi; \
	done

clean:
	rm -rf build
