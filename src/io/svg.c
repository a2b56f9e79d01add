/* SVG line plots (see svg.h). Coordinates are printed with two decimals. */
#include "mllm4rec/svg.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void svg_nice_axis(double min, double max, int ticks, svg_axis *a) {
    if (!isfinite(min) || !isfinite(max)) min = 0, max = 1;
    if (min > max) {
        double t = min;
        min = max;
        max = t;
    }
    if (max - min < 1e-12 * (fabs(max) + fabs(min)) || max == min) {
        double pad = fabs(min) > 0 ? fabs(min) * 0.1 : 1;
        min -= pad;
        max += pad;
    }
    if (ticks < 2) ticks = 2;
    double raw = (max - min) / (ticks - 1);
    double p10 = pow(10, floor(log10(raw)));
    double f = raw / p10, step;
    step = f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10;
    step *= p10;
    a->step = step;
    a->lo = floor(min / step + 1e-9) * step;
    a->hi = ceil(max / step - 1e-9) * step;
    if (a->hi <= a->lo) a->hi = a->lo + step;
}

void svg_panel_axes(const svg_panel *p, svg_axis *x, svg_axis *y) {
    double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
    for (int s = 0; s < p->n_series; s++) {
        const svg_series *r = &p->series[s];
        for (int i = 0; i < r->n; i++) {
            if (!isfinite(r->x[i]) || !isfinite(r->y[i])) continue;
            double err = r->err && isfinite(r->err[i]) ? fabs(r->err[i]) : 0;
            x0 = fmin(x0, r->x[i]);
            x1 = fmax(x1, r->x[i]);
            y0 = fmin(y0, r->y[i] - err);
            y1 = fmax(y1, r->y[i] + err);
        }
    }
    if (p->x_fixed) {
        x0 = fmin(x0, p->x_min);
        x1 = fmax(x1, p->x_max);
    }
    if (x0 > x1) x0 = 0, x1 = 1;
    if (y0 > y1) y0 = 0, y1 = 1;
    svg_nice_axis(x0, x1, 8, x);
    svg_nice_axis(y0, y1, 6, y);
}

static void put_text(FILE *f, const char *s) {
    for (; s && *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        default:
            if ((unsigned char)*s >= 0x20 || *s == '\t') fputc(*s, f);
        }
    }
}

/* A tick label without trailing noise: the step's decimals, no more. */
static void tick_label(char *buf, size_t sz, double v, double step) {
    int dec = 0;
    while (dec < 8 && fabs(step * pow(10, dec) - round(step * pow(10, dec))) > 1e-6) dec++;
    if (fabs(v) < step * 1e-9) v = 0;
    if (fabs(v) >= 1e6 || (fabs(v) > 0 && fabs(v) < 1e-4)) snprintf(buf, sz, "%.3g", v);
    else snprintf(buf, sz, "%.*f", dec, v);
}

static const char *const COLORS[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                     "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};

static void write_panel(FILE *f, const svg_panel *p, int width, int top) {
    svg_axis ax, ay;
    svg_panel_axes(p, &ax, &ay);
    const double L = SVG_MARGIN_LEFT, R = width - SVG_MARGIN_RIGHT;
    const double T = top + SVG_MARGIN_TOP, B = top + SVG_PANEL_HEIGHT - SVG_MARGIN_BOTTOM;
#define PX(v) (L + ((v) - ax.lo) / (ax.hi - ax.lo) * (R - L))
#define PY(v) (B - ((v) - ay.lo) / (ay.hi - ay.lo) * (B - T))
    fprintf(f, "<g class=\"panel\">\n");
    /* a long title gets a smaller font so that it fits the width (bold glyphs about 0.62 em) */
    double fs = 16, tl = p->title ? (double)strlen(p->title) : 0;
    if (tl * 0.62 * fs > width - 20) fs = fmax(9, (width - 20) / (tl * 0.62));
    fprintf(f, "<text x=\"%.2f\" y=\"%.2f\" text-anchor=\"middle\" font-size=\"%.1f\" font-weight=\"bold\">",
            (double)width / 2, top + 24.0, fs);
    put_text(f, p->title);
    fprintf(f, "</text>\n");
    /* grid and ticks */
    int nx = (int)lround((ax.hi - ax.lo) / ax.step), ny = (int)lround((ay.hi - ay.lo) / ay.step);
    char lab[64];
    for (int i = 0; i <= ny; i++) {
        double v = ay.lo + i * ay.step, y = PY(v);
        fprintf(f, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"#e0e0e0\"/>\n", L, y, R, y);
        fprintf(f, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"#000\"/>\n", L - 5, y, L, y);
        tick_label(lab, sizeof lab, v, ay.step);
        fprintf(f, "<text x=\"%.2f\" y=\"%.2f\" text-anchor=\"end\" font-size=\"12\">%s</text>\n", L - 8, y + 4, lab);
    }
    for (int i = 0; i <= nx; i++) {
        double v = ax.lo + i * ax.step, x = PX(v);
        fprintf(f, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"#e0e0e0\"/>\n", x, T, x, B);
        fprintf(f, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"#000\"/>\n", x, B, x, B + 5);
        tick_label(lab, sizeof lab, v, ax.step);
        fprintf(f, "<text x=\"%.2f\" y=\"%.2f\" text-anchor=\"middle\" font-size=\"12\">%s</text>\n", x, B + 19, lab);
    }
    fprintf(f, "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"none\" stroke=\"#000\"/>\n", L, T,
            R - L, B - T);
    fprintf(f, "<text x=\"%.2f\" y=\"%.2f\" text-anchor=\"middle\" font-size=\"13\">", (L + R) / 2, B + 42);
    put_text(f, p->xlabel);
    fprintf(f, "</text>\n");
    fprintf(f, "<text x=\"%.2f\" y=\"%.2f\" text-anchor=\"middle\" font-size=\"13\" transform=\"rotate(-90 %.2f %.2f)\">",
            18.0, (T + B) / 2, 18.0, (T + B) / 2);
    put_text(f, p->ylabel);
    fprintf(f, "</text>\n");
    /* data */
    for (int s = 0; s < p->n_series; s++) {
        const svg_series *r = &p->series[s];
        const char *col = COLORS[s % (int)(sizeof COLORS / sizeof COLORS[0])];
        fprintf(f, "<g class=\"series\" stroke=\"%s\" fill=\"%s\">\n", col, col);
        int open = 0;
        for (int i = 0; i < r->n; i++) {
            if (!isfinite(r->x[i]) || !isfinite(r->y[i])) continue;
            if (!open) fprintf(f, "<polyline fill=\"none\" stroke-width=\"2\" points=\"");
            fprintf(f, "%s%.2f,%.2f", open ? " " : "", PX(r->x[i]), PY(r->y[i]));
            open = 1;
        }
        if (open) fprintf(f, "\"/>\n");
        for (int i = 0; i < r->n; i++) {
            if (!isfinite(r->x[i]) || !isfinite(r->y[i])) continue;
            double x = PX(r->x[i]), y = PY(r->y[i]);
            if (r->err && isfinite(r->err[i]) && r->err[i] > 0) {
                double y0 = PY(r->y[i] - r->err[i]), y1 = PY(r->y[i] + r->err[i]);
                fprintf(f, "<path class=\"err\" fill=\"none\" stroke-width=\"1.5\" d=\"M%.2f %.2fV%.2fM%.2f %.2fH%.2fM%.2f %.2fH%.2f\"/>\n",
                        x, y0, y1, x - 4, y0, x + 4, x - 4, y1, x + 4);
            }
            fprintf(f, "<circle class=\"pt\" cx=\"%.2f\" cy=\"%.2f\" r=\"%s\"/>\n", x, y, r->n > 60 ? "1.5" : "3");
            if (i == r->mark)
                fprintf(f, "<circle class=\"best\" cx=\"%.2f\" cy=\"%.2f\" r=\"7\" fill=\"none\" stroke-width=\"2.5\"/>\n",
                        x, y);
        }
        fprintf(f, "</g>\n");
    }
    /* legend, top right inside the plot */
    int lw = 0;
    for (int s = 0; s < p->n_series; s++) {
        int n = p->series[s].name ? (int)strlen(p->series[s].name) : 0;
        if (p->series[s].mark >= 0) n += 7;
        if (n > lw) lw = n;
    }
    if (p->n_series > 0) {
        /* the corner whose box covers the fewest points: top right, bottom right, top left, bottom left */
        double bw = 40 + lw * 7.2, bh = 8 + 18.0 * p->n_series, bx = R - bw - 8, by = T + 8;
        int best_cover = -1;
        for (int corner = 0; corner < 4; corner++) {
            double cx = corner < 2 ? R - bw - 8 : L + 8, cy = corner % 2 == 0 ? T + 8 : B - bh - 8;
            int cover = 0;
            for (int s = 0; s < p->n_series; s++)
                for (int i = 0; i < p->series[s].n; i++) {
                    double x = PX(p->series[s].x[i]), y = PY(p->series[s].y[i]);
                    cover += x >= cx - 8 && x <= cx + bw + 8 && y >= cy - 8 && y <= cy + bh + 8;
                }
            if (best_cover < 0 || cover < best_cover) {
                best_cover = cover;
                bx = cx;
                by = cy;
            }
        }
        fprintf(f, "<g class=\"legend\">\n<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"#fff\" "
                "fill-opacity=\"0.85\" stroke=\"#999\"/>\n", bx, by, bw, bh);
        for (int s = 0; s < p->n_series; s++) {
            const char *col = COLORS[s % (int)(sizeof COLORS / sizeof COLORS[0])];
            double y = by + 16 + 18.0 * s;
            fprintf(f, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"%s\" stroke-width=\"2\"/>\n",
                    bx + 6, y - 4, bx + 28, y - 4, col);
            fprintf(f, "<text x=\"%.2f\" y=\"%.2f\" font-size=\"12\">", bx + 34, y);
            put_text(f, p->series[s].name);
            if (p->series[s].mark >= 0) fputs(" (o best)", f);
            fprintf(f, "</text>\n");
        }
        fprintf(f, "</g>\n");
    }
    fprintf(f, "</g>\n");
#undef PX
#undef PY
}

int svg_write(const char *path, const svg_panel *panels, int n_panels, int width, mr_error *e) {
    if (width < SVG_MARGIN_LEFT + SVG_MARGIN_RIGHT + 100) return mr_fail(e, MR_ERR_USAGE, "svg: width %d too small", width);
    mr_atomic_file af;
    int rc = mr_atomic_open(&af, path, e);
    if (rc) return rc;
    FILE *f = af.f;
    int h = SVG_PANEL_HEIGHT * (n_panels > 0 ? n_panels : 1);
    fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
            "font-family=\"DejaVu Sans, Arial, sans-serif\">\n", width, h, width, h);
    fprintf(f, "<rect width=\"%d\" height=\"%d\" fill=\"#fff\"/>\n", width, h);
    for (int i = 0; i < n_panels; i++) write_panel(f, &panels[i], width, i * SVG_PANEL_HEIGHT);
    fprintf(f, "</svg>\n");
    return mr_atomic_commit(&af, e);
}
