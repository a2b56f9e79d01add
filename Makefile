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
LDLIBS  := -L$(BLASDIR) -Wl,-rpath,$(BLASDIR) -lopenblas -ljansson -lpcre2-8 -lz -lcurl -lpng16 -ljpeg -lwebp -lm
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
	ar rcs $@ $^

$(BUILD)/mllm4rec: $(CLI_OBJ) $(BUILD)/libmllm4rec.a
	$(CC) $(LDFLAGS) -o $@ $(CLI_OBJ) $(BUILD)/libmllm4rec.a $(LDLIBS)

$(BUILD)/tests/%: tests/%.c tests/testlib.c $(HEADERS) $(BUILD)/libmllm4rec.a
	@mkdir -p $(dir $@)
	$(CC) $(ALLCFLAGS) $(LDFLAGS) -o $@ $< tests/testlib.c $(BUILD)/libmllm4rec.a $(LDLIBS)

$(BUILD)/bench/%: bench/%.c $(HEADERS) $(BUILD)/libmllm4rec.a
	@mkdir -p $(dir $@)
	$(CC) $(ALLCFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libmllm4rec.a $(LDLIBS)

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
FUZZ_SRC := $(sort $(wildcard fuzz/fuzz_*.c))
FUZZ_SECONDS ?= 30
FUZZ_CFLAGS := -std=c11 -O1 -g -fsanitize=fuzzer-no-link,address,undefined $(CPPFLAGS) -fopenmp
fuzz: $(DEPS_STAMP)
	@mkdir -p build/fuzz
	@for f in $(FUZZ_SRC); do n=$$(basename $$f .c); \
	  clang $(FUZZ_CFLAGS) -fsanitize=fuzzer -Ifuzz -o build/fuzz/$$n $$f $(LIB_SRC) $(LDLIBS) || exit 1; \
	  mkdir -p build/fuzz/corpus-$$n; \
	  echo "== $$n ($(FUZZ_SECONDS)s)"; \
	  build/fuzz/$$n -max_total_time=$(FUZZ_SECONDS) -max_len=65536 build/fuzz/corpus-$$n $(wildcard fuzz/seeds/$$n) 2>&1 | tail -3 || exit 1; \
	done

clean:
	rm -rf build
