/* Decoding JPEG (libjpeg-turbo), PNG (libpng) and WebP (libwebp) into RGB8.
 * The conversions follow what Pillow's Image.open(...).convert("RGB") returns,
 * since the BLIP image processor sees images that way: alpha is dropped, grey is
 * replicated, CMYK goes through Pillow's formula. Both C libraries report fatal
 * errors through longjmp: every value that changes between setjmp and a possible
 * longjmp is kept in a volatile or in a struct the handler can reach. */
#include "mllm4rec/image.h"

#include <jpeglib.h>
#include <jerror.h>
#include <png.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <webp/decode.h>

/* Pillow refuses images above twice its MAX_IMAGE_PIXELS (decompression bombs). */
#define MAX_PIXELS 178956970LL

static int check_size(int64_t w, int64_t h, const char *name, const char *fmt, mr_error *e) {
    if (w <= 0 || h <= 0) return mr_fail(e, MR_ERR_INPUT, "%s: %s image has no pixels (%lldx%lld)", name, fmt,
                                         (long long)w, (long long)h);
    if (w * h > MAX_PIXELS)
        return mr_fail(e, MR_ERR_INPUT, "%s: %s image too large (%lldx%lld pixels)", name, fmt, (long long)w,
                       (long long)h);
    return MR_OK;
}

/* ---------------- JPEG ---------------- */

typedef struct jpeg_guard {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
} jpeg_guard;

static void jpeg_fatal(j_common_ptr cinfo) {
    jpeg_guard *g = (jpeg_guard *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, g->message);
    longjmp(g->jump, 1);
}

/* Warnings are ignored (libjpeg recovers from most corrupt data), except a
 * premature end of the data: libjpeg would fill the rest with grey, Pillow
 * refuses such a truncated file, and so do we. */
static void jpeg_note(j_common_ptr cinfo, int level) {
    if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) jpeg_fatal(cinfo);
}

/* Pillow's cmyk2rgb over inverted ("Adobe") CMYK, which Pillow assumes for every
 * CMYK JPEG: libjpeg hands out the stored bytes, Pillow reads them as 255 - x. */
static uint8_t muldiv255(int a, int b) {
    int t = a * b + 128;
    return (uint8_t)(((t >> 8) + t) >> 8);
}

static int decode_jpeg(const uint8_t *data, size_t len, const char *name, mr_image *img, mr_error *e) {
    struct jpeg_decompress_struct cinfo;
    jpeg_guard guard;
    uint8_t *volatile rgb = NULL;
    uint8_t *volatile row = NULL;
    memset(&cinfo, 0, sizeof cinfo);
    cinfo.err = jpeg_std_error(&guard.pub);
    guard.pub.error_exit = jpeg_fatal;
    guard.pub.emit_message = jpeg_note;
    guard.message[0] = 0;
    if (setjmp(guard.jump)) {
        jpeg_destroy_decompress(&cinfo);
        free(rgb);
        free(row);
        return mr_fail(e, MR_ERR_INPUT, "%s: corrupt JPEG: %s", name, guard.message[0] ? guard.message : "truncated");
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, data, (unsigned long)len);
    jpeg_read_header(&cinfo, TRUE);
    int comps = cinfo.num_components;
    if (cinfo.jpeg_color_space == JCS_GRAYSCALE)
        cinfo.out_color_space = JCS_GRAYSCALE;
    else if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK)
        cinfo.out_color_space = JCS_CMYK;
    else if (comps == 3)
        cinfo.out_color_space = JCS_RGB;
    else {
        jpeg_destroy_decompress(&cinfo);
        return mr_fail(e, MR_ERR_INPUT, "%s: unsupported JPEG colour space (%d components)", name, comps);
    }
    if (check_size(cinfo.image_width, cinfo.image_height, name, "JPEG", e)) {
        jpeg_destroy_decompress(&cinfo);
        return MR_ERR_INPUT;
    }
    jpeg_start_decompress(&cinfo);
    int w = (int)cinfo.output_width, h = (int)cinfo.output_height, oc = cinfo.output_components;
    rgb = malloc((size_t)w * h * 3);
    row = malloc((size_t)w * oc);
    if (!rgb || !row) {
        jpeg_destroy_decompress(&cinfo);
        free(rgb);
        free(row);
        return mr_fail(e, MR_ERR_INTERNAL, "%s: out of memory for a %dx%d image", name, w, h);
    }
    while (cinfo.output_scanline < cinfo.output_height) {
        int y = (int)cinfo.output_scanline;
        JSAMPROW rows[1] = {row};
        jpeg_read_scanlines(&cinfo, rows, 1);
        uint8_t *out = rgb + (size_t)y * w * 3;
        if (oc == 3) {
            memcpy(out, row, (size_t)w * 3);
        } else if (oc == 1) {
            for (int x = 0; x < w; x++) out[3 * x] = out[3 * x + 1] = out[3 * x + 2] = row[x];
        } else { /* CMYK */
            for (int x = 0; x < w; x++) {
                const uint8_t *p = row + 4 * x;
                int nk = p[3]; /* 255 - (255 - k) */
                for (int c = 0; c < 3; c++) {
                    int v = nk - muldiv255(255 - p[c], nk);
                    out[3 * x + c] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
                }
            }
        }
    }
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    free(row);
    img->width = w;
    img->height = h;
    img->rgb = rgb;
    return MR_OK;
}

/* ---------------- PNG ---------------- */

typedef struct png_source {
    const uint8_t *data;
    size_t len, pos;
    char message[256];
} png_source;

static void png_read_mem(png_structp png, png_bytep out, size_t n) {
    png_source *s = png_get_io_ptr(png);
    if (n > s->len - s->pos) png_error(png, "unexpected end of file (truncated)");
    memcpy(out, s->data + s->pos, n);
    s->pos += n;
}

static void png_fatal(png_structp png, png_const_charp msg) {
    png_source *s = png_get_error_ptr(png);
    snprintf(s->message, sizeof s->message, "%s", msg);
    png_longjmp(png, 1);
}

static void png_quiet(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg;
}

static int decode_png(const uint8_t *data, size_t len, const char *name, mr_image *img, mr_error *e) {
    png_source src = {data, len, 0, {0}};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &src, png_fatal, png_quiet);
    if (!png) return mr_fail(e, MR_ERR_INTERNAL, "%s: cannot create a PNG reader", name);
    png_infop info = png_create_info_struct(png);
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        return mr_fail(e, MR_ERR_INTERNAL, "%s: cannot create a PNG reader", name);
    }
    uint8_t *volatile rgb = NULL;
    png_bytep *volatile rows = NULL;
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        free(rgb);
        free(rows);
        return mr_fail(e, MR_ERR_INPUT, "%s: corrupt PNG: %s", name, src.message);
    }
    png_set_read_fn(png, &src, png_read_mem);
    png_read_info(png, info);
    png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    int depth = png_get_bit_depth(png, info), ctype = png_get_color_type(png, info);
    if (check_size(w, h, name, "PNG", e)) {
        png_destroy_read_struct(&png, &info, NULL);
        return MR_ERR_INPUT;
    }
    if (ctype == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png); /* tRNS stays unused: no alpha */
    if (ctype == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (depth == 16) png_set_strip_16(png); /* the high byte, as Pillow's ";16B" raw modes */
    /* the palette expansion turns tRNS into an alpha channel: drop it too */
    if ((ctype & PNG_COLOR_MASK_ALPHA) || png_get_valid(png, info, PNG_INFO_tRNS)) png_set_strip_alpha(png);
    if (ctype == PNG_COLOR_TYPE_GRAY || ctype == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    if (png_get_rowbytes(png, info) != (size_t)w * 3) png_error(png, "unexpected row layout after conversion");
    rgb = malloc((size_t)w * h * 3);
    rows = malloc(sizeof(png_bytep) * h);
    if (!rgb || !rows) png_error(png, "out of memory");
    for (png_uint_32 y = 0; y < h; y++) rows[y] = rgb + (size_t)y * w * 3;
    png_read_image(png, rows);
    png_read_end(png, NULL);
    png_destroy_read_struct(&png, &info, NULL);
    free(rows);
    img->width = (int)w;
    img->height = (int)h;
    img->rgb = rgb;
    return MR_OK;
}

/* ---------------- WebP ---------------- */

static int decode_webp(const uint8_t *data, size_t len, const char *name, mr_image *img, mr_error *e) {
    int w = 0, h = 0;
    if (!WebPGetInfo(data, len, &w, &h)) return mr_fail(e, MR_ERR_INPUT, "%s: corrupt WebP header", name);
    if (check_size(w, h, name, "WebP", e)) return MR_ERR_INPUT;
    size_t n = (size_t)w * h * 3;
    uint8_t *rgb = mr_alloc(n, e);
    if (!rgb) return MR_ERR_INTERNAL;
    if (!WebPDecodeRGBInto(data, len, rgb, n, w * 3)) {
        free(rgb);
        return mr_fail(e, MR_ERR_INPUT, "%s: corrupt or unsupported WebP data", name);
    }
    img->width = w;
    img->height = h;
    img->rgb = rgb;
    return MR_OK;
}

int mr_image_decode(const uint8_t *data, size_t len, const char *name, mr_image *img, mr_error *e) {
    img->width = img->height = 0;
    img->rgb = NULL;
    if (!name) name = "image";
    if (len >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF) return decode_jpeg(data, len, name, img, e);
    if (len >= 8 && !memcmp(data, "\x89PNG\r\n\x1a\n", 8)) return decode_png(data, len, name, img, e);
    if (len >= 12 && !memcmp(data, "RIFF", 4) && !memcmp(data + 8, "WEBP", 4))
        return decode_webp(data, len, name, img, e);
    const char *what = len >= 6 && !memcmp(data, "GIF8", 4) ? "GIF"
                       : len >= 2 && !memcmp(data, "BM", 2) ? "BMP"
                       : len == 0                           ? "empty file"
                                                            : "unknown format";
    return mr_fail(e, MR_ERR_INPUT, "%s: not a JPEG, PNG or WebP image (%s)", name, what);
}

int mr_image_load(const char *path, mr_image *img, mr_error *e) {
    char *data;
    size_t len;
    img->width = img->height = 0;
    img->rgb = NULL;
    int rc = mr_read_file(path, &data, &len, e);
    if (rc) return rc;
    rc = mr_image_decode((const uint8_t *)data, len, path, img, e);
    free(data);
    return rc;
}

void mr_image_free(mr_image *img) {
    if (!img) return;
    free(img->rgb);
    img->rgb = NULL;
    img->width = img->height = 0;
}
