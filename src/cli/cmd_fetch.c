/* mllm4rec fetch: downloads one file with libcurl (the demo uses it for the
 * GroupLens archive), optionally checking its sha256. */
#include "cli.h"

#include <stdio.h>

#include "mllm4rec/prepare.h"

static const char *USAGE =
    "usage: mllm4rec fetch --url URL --out FILE [--sha256 HEX]\n"
    "Downloads URL to FILE (written atomically) and prints its sha256.";

CLI_COMMAND(cmd_fetch) {
    const char *url = NULL, *out = NULL, *sha = NULL;
    cli_flag flags[] = {
        {"--url", FLAG_STR, &url, "what to download (http or https)", 0},
        {"--out", FLAG_STR, &out, "where to write it", 0},
        {"--sha256", FLAG_STR, &sha, "expected sha256 (64 hex digits); a mismatch writes nothing", 0},
    };
    int rc = cli_parse(argc, argv, 1, flags, 3, USAGE);
    if (rc < 0) return 0;
    if (rc) return rc;
    if (!url || !out) return cli_usage_error("fetch", "--url and --out are required");
    mr_error err = {0};
    char hex[65];
    rc = mr_download_file(url, out, sha, hex, &err);
    if (rc) return cli_report("fetch", &err);
    printf("%s  %s\n", hex, out);
    return 0;
}
