<?php
// Router for PHP's built-in web server (`php -S 127.0.0.1:PORT router.php`): serves Debian's
// SimpleSAMLphp www/ under /simplesaml/ with correct SCRIPT_NAME / SCRIPT_FILENAME / PATH_INFO.
// SimpleSAMLphp 1.19 derives its own URLs (module.php/..., the login form's action) from them,
// so a plain docroot setup breaks them.
$www = '/usr/share/simplesamlphp/www';
$path = parse_url($_SERVER['REQUEST_URI'], PHP_URL_PATH);
if ($path === '/' || $path === '/simplesaml') {
    header('Location: /simplesaml/');
    http_response_code(302);
    return true;
}
if (strpos($path, '/simplesaml/') !== 0) {
    http_response_code(404);
    echo "not found\n";
    return true;
}
$rel = substr($path, strlen('/simplesaml'));
if (substr($rel, -1) === '/') {
    $rel .= 'index.php';
}
if (preg_match('#^(/.*?\.php)(/.*)?$#', $rel, $m) && is_file($www . $m[1])) {
    $script = $www . $m[1];
    $_SERVER['SCRIPT_FILENAME'] = $script;
    $_SERVER['SCRIPT_NAME'] = '/simplesaml' . $m[1];
    $_SERVER['PHP_SELF'] = '/simplesaml' . $rel;
    if (isset($m[2]) && $m[2] !== '') {
        $_SERVER['PATH_INFO'] = $m[2];
    } else {
        unset($_SERVER['PATH_INFO']);
    }
    chdir(dirname($script));
    require $script;
    return true;
}
$file = realpath($www . $rel);
if ($file !== false && strpos($file, $www . '/') === 0 && is_file($file)) {
    $types = ['css' => 'text/css', 'js' => 'application/javascript', 'png' => 'image/png',
              'gif' => 'image/gif', 'ico' => 'image/x-icon', 'svg' => 'image/svg+xml',
              'jpg' => 'image/jpeg', 'woff' => 'font/woff', 'woff2' => 'font/woff2',
              'ttf' => 'font/ttf', 'html' => 'text/html'];
    $ext = strtolower(pathinfo($file, PATHINFO_EXTENSION));
    header('Content-Type: ' . ($types[$ext] ?? 'application/octet-stream'));
    readfile($file);
    return true;
}
http_response_code(404);
echo "not found\n";
return true;
