/* The SVG plot writer: nice axes, well-formed XML, points where they belong. */
#include "test.h"
#include "mllm4rec/svg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A small well-formedness check: every element closed in order, attributes
 * quoted, '&' only as an entity, '<' never inside text. Returns NULL or why not. */
static const char *xml_check(const char *s) {
    static char why[200];
    const char *stack[256];
    size_t lens[256];
    int depth = 0, root_seen = 0;
    const char *p = s;
    if (!strncmp(p, "<?xml", 5)) {
        p = strstr(p, "?>");
        if (!p) return "unterminated XML declaration";
        p += 2;
    }
    while (*p) {
        if (*p == '&') {
            const char *semi = strchr(p, ';');
            if (!semi || semi - p > 6) return "a raw '&'";
            p = semi + 1;
            continue;
        }
        if (*p != '<') {
            if (depth == 0 && !(*p == ' ' || *p == '\n')) return "text outside the root";
            p++;
            continue;
        }
        if (p[1] == '/') {
            const char *name = p + 2;
            size_t n = strcspn(name, ">");
            if (depth == 0 || lens[depth - 1] != n || strncmp(stack[depth - 1], name, n)) {
                snprintf(why, sizeof why, "mismatched </%.*s>", (int)n, name);
                return why;
            }
            depth--;
            p = name + n + 1;
            continue;
        }
        const char *name = p + 1;
        size_t n = strcspn(name, " />\n");
        if (n == 0) return "an empty tag name";
        const char *q = name + n;
        for (;;) { /* attributes */
            while (*q == ' ' || *q == '\n') q++;
            if (*q == '>' || (q[0] == '/' && q[1] == '>')) break;
            size_t an = strcspn(q, "= >");
            if (an == 0 || q[an] != '=' || q[an + 1] != '"') return "an unquoted attribute";
            const char *end = strchr(q + an + 2, '"');
            if (!end) return "an unterminated attribute";
            for (const char *c = q + an + 2; c < end; c++)
                if (*c == '<') return "'<' in an attribute";
            q = end + 1;
        }
        if (*q == '/') {
            if (depth == 0) root_seen++;
            p = q + 2;
        } else {
            if (depth == 256) return "too deep";
            if (depth == 0) root_seen++;
            stack[depth] = name;
            lens[depth++] = n;
            p = q + 1;
        }
    }
    if (depth) return "unclosed elements at the end";
    if (root_seen != 1) return "not exactly one root element";
    return NULL;
}

TEST(nice_axes) {
    svg_axis a;
    svg_nice_axis(0, 0.93, 6, &a);
    CHECK_NEAR(a.lo, 0, 1e-12);
    CHECK_NEAR(a.hi, 1, 1e-12);
    CHECK_NEAR(a.step, 0.2, 1e-12);
    svg_nice_axis(5, 25, 8, &a); /* raw step 20/7 = 2.86 -> 5 */
    CHECK_NEAR(a.lo, 5, 1e-12);
    CHECK_NEAR(a.hi, 25, 1e-12);
    CHECK_NEAR(a.step, 5, 1e-12);
    svg_nice_axis(0.113, 0.127, 6, &a); /* raw 0.0028 -> 0.005 */
    CHECK_NEAR(a.step, 0.005, 1e-12);
    CHECK_NEAR(a.lo, 0.11, 1e-12);
    CHECK_NEAR(a.hi, 0.13, 1e-12);
    svg_nice_axis(3, 3, 6, &a); /* a flat series still gets an axis */
    CHECK(a.lo < 3 && a.hi > 3);
}

TEST(well_formed_and_points_in_place) {
    const double x[] = {0, 5, 10}, y[] = {0, 0.5, 1}, err[] = {0, 0.1, 0};
    svg_series s = {.name = "A & <B>", .n = 3, .x = x, .y = y, .err = err, .mark = 2};
    svg_panel p = {.title = "t \"q\" & <x>", .xlabel = "x", .ylabel = "y", .n_series = 1, .series = &s};
    svg_axis ax, ay;
    svg_panel_axes(&p, &ax, &ay);
    /* x: [0, 10] in steps of 2; y: [-0.0, 1] (the bar reaches 0.4..0.6) in steps of 0.2 */
    CHECK_NEAR(ax.lo, 0, 1e-12);
    CHECK_NEAR(ax.hi, 10, 1e-12);
    CHECK_NEAR(ay.lo, 0, 1e-12);
    CHECK_NEAR(ay.hi, 1, 1e-12);
    const char *path = test_tmp_path("p.svg");
    mr_error e = {0};
    CHECK_OK(svg_write(path, &p, 1, 800, &e), &e);
    char *t = NULL;
    size_t len;
    CHECK_OK(mr_read_file(path, &t, &len, &e), &e);
    const char *why = xml_check(t);
    CHECK_MSG(!why, "not well-formed: %s", why);
    CHECK(strstr(t, "A &amp; &lt;B&gt;") != NULL);
    CHECK(strstr(t, "t &quot;q&quot; &amp; &lt;x&gt;") != NULL);
    /* plot area: x from 80 to 770, y from 304 (value 0) up to 40 (value 1) */
    const double want_x[] = {80, 425, 770}, want_y[] = {304, 172, 40};
    const char *c = t;
    for (int i = 0; i < 3; i++) {
        c = strstr(c, "<circle class=\"pt\"");
        CHECK(c != NULL);
        double cx, cy;
        CHECK(sscanf(c, "<circle class=\"pt\" cx=\"%lf\" cy=\"%lf\"", &cx, &cy) == 2);
        CHECK_NEAR(cx, want_x[i], 0.01);
        CHECK_NEAR(cy, want_y[i], 0.01);
        c++;
    }
    /* the marked point and the error bar of the middle point (0.4 .. 0.6) */
    c = strstr(t, "<circle class=\"best\"");
    CHECK(c != NULL);
    double bx, by;
    CHECK(sscanf(c, "<circle class=\"best\" cx=\"%lf\" cy=\"%lf\"", &bx, &by) == 2);
    CHECK_NEAR(bx, 770, 0.01);
    CHECK_NEAR(by, 40, 0.01);
    c = strstr(t, "class=\"err\"");
    CHECK(c != NULL);
    double ex, ey0, ey1;
    CHECK(sscanf(strstr(c, "d=\"M"), "d=\"M%lf %lfV%lf", &ex, &ey0, &ey1) == 3);
    CHECK_NEAR(ex, 425, 0.01);
    CHECK_NEAR(ey0, 304 - 0.4 * 264, 0.01);
    CHECK_NEAR(ey1, 304 - 0.6 * 264, 0.01);
    /* tick labels of both axes */
    CHECK(strstr(t, ">0.4</text>") != NULL);
    CHECK(strstr(t, ">10</text>") != NULL);
    free(t);
}

TEST(stacked_panels_and_xml_checker_catches_errors) {
    const double x[] = {1, 2}, y[] = {3, 4};
    svg_series s = {.name = "s", .n = 2, .x = x, .y = y, .mark = -1};
    svg_panel p[2] = {{.title = "a", .xlabel = "x", .ylabel = "y", .n_series = 1, .series = &s},
                      {.title = "b", .xlabel = "x", .ylabel = "y", .n_series = 1, .series = &s}};
    const char *path = test_tmp_path("two.svg");
    mr_error e = {0};
    CHECK_OK(svg_write(path, p, 2, 800, &e), &e);
    char *t = NULL;
    size_t len;
    CHECK_OK(mr_read_file(path, &t, &len, &e), &e);
    CHECK(xml_check(t) == NULL);
    CHECK(strstr(t, "height=\"720\"") != NULL);
    /* the second panel's first point sits one panel height below the first's */
    double cx1, cy1, cx2, cy2;
    const char *c1 = strstr(t, "<circle class=\"pt\""), *c2 = strstr(strstr(t, "</g>\n</g>") + 1, "<circle class=\"pt\"");
    CHECK(c1 && c2);
    CHECK(sscanf(c1, "<circle class=\"pt\" cx=\"%lf\" cy=\"%lf\"", &cx1, &cy1) == 2);
    CHECK(sscanf(c2, "<circle class=\"pt\" cx=\"%lf\" cy=\"%lf\"", &cx2, &cy2) == 2);
    CHECK_NEAR(cx1, cx2, 1e-9);
    CHECK_NEAR(cy2 - cy1, SVG_PANEL_HEIGHT, 0.01);
    free(t);
    CHECK(xml_check("<svg><g></svg>") != NULL);
    CHECK(xml_check("<svg a=b></svg>") != NULL);
    CHECK(xml_check("<svg>a & b</svg>") != NULL);
    CHECK(xml_check("<svg><g/></svg>") == NULL);
}

int main(void) {
    RUN(nice_axes);
    RUN(well_formed_and_points_in_place);
    RUN(stacked_panels_and_xml_checker_catches_errors);
    return test_summary();
}
